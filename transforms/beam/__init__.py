"""The thin Beam layer: `handler` (the RunInference `ModelHandler`) and `score` (the `ScoreLongCLIP` transform)."""
