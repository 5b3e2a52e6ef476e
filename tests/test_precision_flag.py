"""`--precision` and `--stored_weights` reach ScoreLongCLIP; only fp32, bf16 and fp16 are accepted."""

import pytest

from pipeline.job import parse_options
from pipeline.options import ScoreLongCLIPOptions


def _argv(checkpoint, *extra):
    return ["--input", "in.jsonl", "--output", "out/x", "--model", str(checkpoint), "--device", "cpu", *extra]


def test_precision_defaults_to_fp32_and_takes_bf16(longclip_checkpoint):
    assert parse_options(_argv(longclip_checkpoint)).view_as(ScoreLongCLIPOptions).precision == "fp32"
    options = parse_options(_argv(longclip_checkpoint, "--precision", "bf16"))
    assert options.view_as(ScoreLongCLIPOptions).precision == "bf16"


def test_unknown_precision_is_refused(longclip_checkpoint, capsys):
    with pytest.raises(SystemExit):
        parse_options(_argv(longclip_checkpoint, "--precision", "int8"))
    assert "invalid choice" in capsys.readouterr().err


def test_stored_weights_flag_scores_the_checkpoint_as_stored(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images
):
    """The job's default gives the original evaluator's scores; `--stored_weights` the unrounded ones."""
    import json

    from reference_longclip import reference_score

    from pipeline import run

    lines = [
        {"image_path": str(good_images[name]), "text": "a small red house by the sea"}
        for name in ("rgb.jpg", "grey.png")
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for stored in (False, True):
        prefix = tmp_path / f"stored-{stored}" / "scored"
        argv = ["--input", str(tmp_path / "in.jsonl"), "--output", str(prefix), "--model", str(longclip_checkpoint)]
        run(argv + (["--stored_weights"] if stored else []))
        outputs = list(prefix.parent.glob("scored-*.jsonl"))
        assert sum(1 for path in outputs for _ in path.open()) == len(lines)
        for path in outputs:
            for record in map(json.loads, path.open()):
                want = reference_score(longclip_state_dict, record["image_path"], record["text"], stored_weights=stored)
                other = reference_score(
                    longclip_state_dict, record["image_path"], record["text"], stored_weights=not stored
                )
                assert abs(record["longclip_score"] - want) < 1e-6 < abs(record["longclip_score"] - other)
