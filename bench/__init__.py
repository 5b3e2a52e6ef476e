"""Benchmarks of ScoreLongCLIP: ratios measured side by side in one run (`make bench`).

Speed targets live here, never in timed unit tests.
"""
