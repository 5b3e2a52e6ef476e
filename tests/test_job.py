"""`python -m pipeline` run as a user runs it: every input line comes out exactly once."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import ScoreLongCLIPOptions, parse_options, run, summarize
from tests.support.captions import CAPTIONS
from tests.support.images import BAD_IMAGE_REASONS
from tests.support.paths import REPO_ROOT
from tests.support.reference_longclip import reference_score

MALFORMED_LINES = {
    b"not json at all": "not_json",
    b"[1, 2, 3]": "not_object",
    b"42": "not_object",
    b"": "empty_line",
    b"\xff\xfe\x00 latin-1 caf\xe9": "not_utf8",
    b'{"unterminated": ': "not_json",
    b'{"id": "deep", "text": "a cat", "a": ' + b"[" * 3000 + b"]" * 3000 + b"}": "too_deep",
    b'{"id": "pickle-deep", "text": "a cat", "a": ' + b"[" * 500 + b"]" * 500 + b"}": "too_deep",
    b'{"id": "surrogate", "image_path": "rgb.png", "text": "\\ud800 cat"}': "bad_unicode",
}
BAD_ROW_REASONS = {
    **{f"bad/{name}": reason for name, reason in BAD_IMAGE_REASONS.items()},
    "empty-text": "text_empty",
    "null-text": "text_missing",
    "number-text": "text_wrong_type",
    "no-image": "image_missing",
    "missing-file": "image_not_found",
}


def _write_corpus(path: Path, good_images, bad_images) -> list:
    """About 80 lines: every good image kind with several captions, every fault, malformed lines."""
    lines = []
    for name in sorted(good_images):
        for caption in ("short", "around_77_tokens", "over_248_tokens", "unicode"):
            lines.append({"id": f"{name}/{caption}", "image_path": name, "text": CAPTIONS[caption]})
    for name in sorted(bad_images):
        lines.append({"id": f"bad/{name}", "image_path": str(bad_images[name]), "text": "a cat"})
    lines += [
        {"id": "empty-text", "image_path": "rgb.png", "text": "  "},
        {"id": "null-text", "image_path": "rgb.png", "text": None},
        {"id": "number-text", "image_path": "rgb.png", "text": 3.5},
        {"id": "no-image", "text": "a cat"},
        {"id": "missing-file", "image_path": "nope.png", "text": "a cat"},
    ]
    raw = [json.dumps(line, ensure_ascii=False).encode() for line in lines] + list(MALFORMED_LINES)
    path.write_bytes(b"\n".join(raw) + b"\n")
    return lines


def _read_jsonl(prefix: Path) -> list:
    return [
        json.loads(line)
        for shard in sorted(prefix.parent.glob(prefix.name + "-*.jsonl"))
        for line in shard.read_text().splitlines()
    ]


def test_cli_accounts_for_every_line_with_exact_scores(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images, bad_images
):
    records = _write_corpus(tmp_path / "in.jsonl", good_images, bad_images)
    image_root = next(iter(good_images.values())).parent
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "--input",
            str(tmp_path / "in*.jsonl"),
            "--output",
            str(tmp_path / "out" / "scored"),
            "--model",
            str(longclip_checkpoint),
            "--image_root",
            str(image_root),
            "--max_batch_size",
            "16",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scored = _read_jsonl(tmp_path / "out" / "scored")
    dead = _read_jsonl(tmp_path / "out" / "scored.dead_letter")
    total_lines = len(records) + len(MALFORMED_LINES)
    assert 75 <= total_lines <= 90
    assert len(scored) + len(dead) == total_lines
    assert sorted(r["id"] for r in scored) == sorted(r["id"] for r in records)

    worst = 0.0
    for out in scored:
        if out["id"] in BAD_ROW_REASONS:
            assert out["longclip_score"] == 0.0
            assert out["longclip_score_reason"] == BAD_ROW_REASONS[out["id"]], out
        else:
            expected = reference_score(longclip_state_dict, good_images[out["image_path"]], out["text"])
            worst = max(worst, abs(out["longclip_score"] - expected))
            assert out["longclip_score_error"] is None
            assert out["longclip_score_truncated"] == out["id"].endswith("over_248_tokens")
    assert worst < 1e-6, f"max |score - original LongCLIP| = {worst}"
    assert len(scored) - len(BAD_ROW_REASONS) == 4 * len(good_images)

    assert sorted(d["reason"] for d in dead) == sorted(MALFORMED_LINES.values())
    not_utf8 = next(d for d in dead if d["reason"] == "not_utf8")
    assert not_utf8["raw"] is None and not_utf8["raw_base64"]
    assert all(d["source"].endswith("in.jsonl") for d in dead)
    assert f"Done: {total_lines} records read" in done.stderr


def test_run_returns_counts_from_beam_metrics(tmp_path, longclip_checkpoint, good_images):
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"image_path": str(good_images["rgb.png"]), "text": CAPTIONS["over_248_tokens"]})
        + "\nnot json\n"
        + json.dumps({"image_path": str(good_images["rgb.png"]), "text": ""})
        + "\n"
    )
    result = run(
        [
            "--input",
            str(tmp_path / "in.jsonl"),
            "--output",
            str(tmp_path / "scored"),
            "--model",
            str(longclip_checkpoint),
        ]
    )
    counts = summarize(result)
    assert counts["read"] == 3 and counts["scored"] == 1 and counts["failed"] == 1 and counts["dead_lettered"] == 1
    assert counts["failed_text_empty"] == 1 and counts["dead_lettered_not_json"] == 1 and counts["truncated"] == 1


def test_two_worker_processes_share_one_model(tmp_path, longclip_checkpoint, good_images):
    lines = [
        {"id": i, "image_path": str(good_images[name]), "text": CAPTIONS["around_77_tokens"]}
        for i, name in enumerate(sorted(good_images) * 8)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    loads, scores = {}, {}
    for shared in (False, True):
        prefix = tmp_path / f"shared-{shared}" / "scored"
        done = _cli(
            "--input",
            str(tmp_path / "in.jsonl"),
            "--output",
            str(prefix),
            "--model",
            str(longclip_checkpoint),
            "--max_batch_size",
            "4",
            "--direct_num_workers",
            "2",
            "--direct_running_mode",
            "multi_processing",
            *(["--share_model_across_processes"] if shared else []),
        )
        assert done.returncode == 0, done.stderr[-3000:]
        loads[shared] = done.stderr.count("Loaded LongCLIP checkpoint")
        scores[shared] = {r["id"]: r["longclip_score"] for r in _read_jsonl(prefix)}
    assert loads == {False: 2, True: 1}, "each worker process loads its own model unless shared"
    assert scores[True] == pytest.approx(scores[False], abs=1e-6) and len(scores[True]) == len(lines)


def test_readme_dataflow_recipe_parses_without_contacting_anything():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Running on Dataflow with GPUs", 1)[1]
    command = section.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    argv = shlex.split(command)[3:]  # drop "python -m pipeline"
    options = parse_options(argv).get_all_options()
    assert options["runner"] == "DataflowRunner" and options["machine_type"].startswith("g2-")
    assert "install-nvidia-driver" in options["dataflow_service_options"][0]
    assert options["share_model_across_processes"] and options["model"].startswith("gs://")


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output", "x"], "pass exactly one of --input, --input_subscription and --input_topic"),
        (["--input", "x"], "pass --output (files), --output_table (BigQuery), or both"),
        (["--input", "x", "--input_topic", "projects/p/topics/t", "--output", "y"], "pass exactly one of --input"),
        (["--input_subscription", "projects/p/subscriptions/s", "--output", "y"], "add --streaming"),
        (
            ["--streaming", "--input_topic", "projects/test-project/topics/t", "--output", "y", "--id_label", "id"],
            "--id_label works on the DataflowRunner only",
        ),
        (
            ["--streaming", "--input_topic", "projects/p/topics/t", "--output", "y", "--max_batch_duration_secs", "1"],
            "--max_batch_duration_secs needs the DataflowRunner",
        ),
        (["--input", "x", "--output", "y", "--window_seconds", "0"], "--window_seconds: must be more than 0, got 0.0"),
        (["--input", "x", "--output_table", "just_a_name"], "--output_table: 'just_a_name' is not PROJECT:DATASET"),
        (["--input", "x", "--output_table", "dataset.table"], "(or DATASET.TABLE with --project)"),
        (["--input", "x", "--output", "y", "--model", "/no/such/model.pt"], "is not an existing file"),
        (["--input", "x", "--output", "y", "--min_batch_size", "0"], "--min_batch_size: must be at least 1, got 0"),
        (
            ["--input", "x", "--output", "y", "--min_batch_size", "8", "--max_batch_size", "4"],
            "--max_batch_size: must be at least min_batch_size (8), got 4",
        ),
        (["--input", "x", "--output", "y", "--http_timeout_secs", "0"], "--http_timeout_secs: must be more than 0"),
        (["--input", "x", "--output", "y", "--max_batch_size", "many"], "invalid int value"),
        (["--inp", "x", "--output", "y"], "pass exactly one of --input"),
        (["--input", "x", "--output", "y", "--max_batchsize", "8"], "unknown flag(s) --max_batchsize"),
        (["--input", "x", "--output", "y", "--device", "tpu"], "--device: 'tpu' is not a torch device"),
        (
            ["--streaming", "--input", "x", "--output", "y", "--output_format", "parquet"],
            "--output_format parquet is for batch jobs; a streaming job writes JSONL files",
        ),
        (
            ["--streaming", "--input_topic", "projects/p/topics/t", "--output", "y", "--input_format", "parquet"],
            "--input_format parquet is for --input files; Pub/Sub messages are JSON",
        ),
        (["--input", "x", "--output_table", "d.t", "--output_format", "parquet"], "--output_format parquet is the"),
        (["--input", "x", "--output", "y", "--input_format", "csv"], "invalid choice: 'csv'"),
        (["--input", "x", "--output", "y", "--image_extensions", "jpg, png"], "--image_extensions: must be extensions"),
    ],
)
def test_bad_flags_fail_with_a_clear_message(args, message):
    done = _cli(*args)
    assert done.returncode == 2 and message in done.stderr


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
