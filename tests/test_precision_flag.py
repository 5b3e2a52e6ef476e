"""`--precision` reaches ScoreLongCLIP; only fp32, bf16 and fp16 are accepted."""

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
