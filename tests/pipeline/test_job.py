"""`python -m pipeline` run as a user runs it: every input line comes out exactly once."""

import itertools
import json
import math
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import ScoreLongCLIPOptions, UsageError, parse, run, summarize
from tests.support.adversarial import MALFORMED, write_corpus
from tests.support.cli import run_job
from tests.support.fuzz import json_lines
from tests.support.reference_longclip import reference_score
from transforms.testing.captions import CAPTIONS
from transforms.testing.images import BAD_IMAGE_REASONS

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


@pytest.mark.slow
def test_cli_accounts_for_every_line_with_exact_scores(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images, bad_images
):
    records = _write_corpus(tmp_path / "in.jsonl", good_images, bad_images)
    image_root = next(iter(good_images.values())).parent
    done = run_job(
        *["--input", str(tmp_path / "in*.jsonl"), "--output", str(tmp_path / "out" / "scored")],
        *["--model", str(longclip_checkpoint), "--image_root", str(image_root), "--max_batch_size", "16"],
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
    assert not list((tmp_path / "out").glob("*rejected*")) and "Filter:" not in done.stderr  # no filter, no change
    # INFO says what the job does, not what Beam does inside.
    assert "Input: 1 file(s) matching" in done.stderr and "Scored records (score 0.0 with a reason" in done.stderr
    assert "Converting string literal type hint" not in done.stderr and " INFO apache_beam" not in done.stderr


@pytest.mark.slow
def test_keep_top_fraction_puts_every_line_in_kept_rejected_or_dead_letter(
    tmp_path, longclip_checkpoint, good_images, bad_images
):
    records = _write_corpus(tmp_path / "in.jsonl", good_images, bad_images)
    image_root = next(iter(good_images.values())).parent
    done = _cli(
        "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "kept"),
        "--model", str(longclip_checkpoint), "--image_root", str(image_root), "--keep_top_fraction", "0.3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    kept = _read_jsonl(tmp_path / "out" / "kept")
    rejected = _read_jsonl(tmp_path / "out" / "kept.rejected")
    dead = _read_jsonl(tmp_path / "out" / "kept.dead_letter")
    assert sorted(r["id"] for r in kept + rejected) == sorted(r["id"] for r in records)
    assert len(dead) == len(MALFORMED_LINES)
    scored = sorted(
        (r for r in kept + rejected if r["longclip_score_reason"] is None), key=lambda r: -r["longclip_score"]
    )
    assert len(scored) == 4 * len(good_images)
    cutoff = scored[math.ceil(0.3 * len(scored)) - 1]["longclip_score"]
    assert kept == [r for r in kept if r["longclip_score_reason"] is None and r["longclip_score"] >= cutoff]
    assert len(kept) == sum(r["longclip_score"] >= cutoff for r in scored) == math.ceil(0.3 * len(scored))
    assert {r["longclip_score_cutoff"] for r in rejected} == {cutoff}
    assert sum(r["longclip_score_reason"] is not None for r in rejected) == len(BAD_ROW_REASONS)
    assert f"Filter: {len(kept)} kept, {len(rejected)} rejected" in done.stderr


@pytest.mark.slow
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


@pytest.mark.slow
def test_two_worker_processes_share_one_model(tmp_path, longclip_checkpoint, good_images):
    lines = [
        {"id": i, "image_path": str(good_images[name]), "text": CAPTIONS["around_77_tokens"]}
        for i, name in enumerate(sorted(good_images) * 8)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    loads, bounded, scores = {}, {}, {}
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
        bounded[shared] = done.stderr.count("at most 1 batch(es) scored at once")
        scores[shared] = {r["id"]: r["longclip_score"] for r in _read_jsonl(prefix)}
    assert loads == {False: 2, True: 1}, "each worker process loads its own model unless shared"
    # The shared model serves both processes' batches one at a time (the bound itself: tests/test_scorer.py).
    assert bounded == {False: 2, True: 1}
    assert scores[True] == pytest.approx(scores[False], abs=1e-6) and len(scores[True]) == len(lines)


def _cli(*args) -> subprocess.CompletedProcess:
    return run_job(*args, timeout=300)


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
        (["--output", "y"], "pass exactly one of --input"),
        (["--inp", "x", "--output", "y"], "unknown flag(s) --inp: did you mean --input?"),
        (["--input", "x", "--output", "y", "--max_batchsize", "8"], "unknown flag(s) --max_batchsize"),
        (["--input", "x", "--output", "y", "--device", "tpu"], "--device: 'tpu' is not a torch device"),
        (["--input", "x", "--output", "y", "--keep_top_fraction", "0"], "--keep_top_fraction: must be more than 0"),
        (["--input", "x", "--output", "y", "--keep_top_fraction", "1.5"], "--keep_top_fraction: must be at most 1"),
        (["--input", "x", "--output", "y", "--keep_min_score", "-0.1"], "--keep_min_score: must be at least 0"),
        (["--input", "x", "--output", "y", "--rejected_output", "z"], "--rejected_output and --rejected_table need"),
        (
            ["--streaming", "--input_topic", "projects/p/topics/t", "--output", "y", "--keep_top_fraction", "0.3"],
            "--keep_top_fraction needs every score before it can cut",
        ),
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
        (["--input", "x.parquet", "--output", "y", "--resume"], "--resume reads JSONL input part by part"),
        (["--input", "x", "--output", "y", "--output_format", "parquet", "--resume"], "--resume reads JSONL input"),
        (["--streaming", "--input_topic", "projects/p/topics/t", "--output", "y", "--overwrite"], "--overwrite is for"),
        (["--input", "x", "--output", "y", "--image_extensions", "jpg, png"], "--image_extensions: must be extensions"),
        (["--input", "x", "--output", "y", "--output_format", "webdataset"], "--output_format webdataset copies the"),
    ],
)
def test_bad_flags_fail_with_a_clear_message(args, message):
    done = _cli(*args)
    assert done.returncode == 2 and message in done.stderr


def _argv(checkpoint, *extra):
    return ["--input", "in.jsonl", "--output", "out/x", "--model", str(checkpoint), "--device", "cpu", *extra]


def test_precision_defaults_to_fp32_and_takes_bf16(longclip_checkpoint):
    assert parse(_argv(longclip_checkpoint)).job.precision == "fp32"
    options = parse(_argv(longclip_checkpoint, "--precision", "bf16")).beam
    assert options.view_as(ScoreLongCLIPOptions).precision == "bf16"


def test_unknown_precision_is_refused(longclip_checkpoint, capsys):
    with pytest.raises(SystemExit):
        parse(_argv(longclip_checkpoint, "--precision", "int8"))
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


@pytest.mark.slow
def test_adversarial_records_come_out_once_with_their_reasons_nothing_leaked_and_none_held_back(
    tmp_path, longclip_checkpoint, image_server, silent_server, good_images
):
    corpus = write_corpus(tmp_path / "corpus", image_server, silent_server, good_images)
    deadline = 2.0
    job_started = time.monotonic()
    done = _cli(
        "--input",
        str(corpus.path),
        "--output",
        str(tmp_path / "out" / "scored"),
        "--model",
        str(longclip_checkpoint),
        "--image_root",
        str(corpus.image_root),
        "--allowed_image_prefixes",
        corpus.allowed_prefixes,
        "--http_timeout_secs",
        str(deadline),
        "--max_batch_size",
        "4",
        "--prepare_threads",
        "2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scored = _read_jsonl(tmp_path / "out" / "scored")
    dead = _read_jsonl(tmp_path / "out" / "scored.dead_letter")
    assert sorted(record["id"] for record in scored) == sorted(corpus.expected), "every record exactly once"
    assert sorted(entry["raw"] for entry in dead) == sorted(line.decode() for line in MALFORMED)
    wrong = {
        record["id"]: (record["longclip_score_reason"], record["longclip_score_error"])
        for record in scored
        if record["longclip_score_reason"] != corpus.expected[record["id"]]
    }
    assert not wrong, wrong
    assert all(record["longclip_score"] > 0 for record in scored if corpus.expected[record["id"]] is None)
    # Records keep their own fields (URLs with credentials included); what the job adds must not leak.
    added = [record["longclip_score_error"] for record in scored] + [entry["error"] for entry in dead]
    leaked = [secret for secret in corpus.secrets if secret in done.stdout + done.stderr + json.dumps(added)]
    assert not leaked, leaked
    # Reads start as their records enter the prepare step, at most 6 in flight here (batch 4 + 2 threads).
    # The 8 stalled records come in a row: two waves of deadlines, then the records behind them enter
    # and retry within their own deadline, so requests spread over at most 3 deadlines. Were stalled
    # reads waited for in turn, they would spread over at least 7 (14 s).
    arrivals = [request.at for request in image_server.requests if request.at > job_started]
    spread = max(arrivals) - min(arrivals)
    assert spread < 3 * deadline + 1, f"requests spread over {spread:.1f} s"


DATAFLOW_DRY_RUN = ["--runner", "DataflowRunner", "--project", "test-project", "--region", "us-central1"]
DATAFLOW_DRY_RUN += ["--temp_location", "gs://b/tmp", "--no_auth", "--dry_run=True"]


@pytest.mark.slow
def test_inputs_and_outputs_that_cannot_work_fail_before_the_job_starts(tmp_path, longclip_checkpoint):
    """Each exits 2 with one line saying what to fix (a missing --input file used to end in a traceback, exit 1)."""
    (tmp_path / "in.jsonl").write_text('{"text": "a cat"}\n')
    (tmp_path / "a_file").write_text("")
    model = ["--model", str(longclip_checkpoint)]
    cases = [
        (["--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")], "--input: no file matches"),
        (["--input", str(tmp_path), "--output", str(tmp_path / "o")], "is a folder: give a file, or a glob such as"),
        (["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path)], "--output: " + repr(str(tmp_path))),
        (
            ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "a_file" / "scored")],
            "is a file, so no folder can be made there",
        ),
        (
            ["--input", str(tmp_path / "in.jsonl"), "--output", "o", "--dead_letter", str(tmp_path / "a_file/x/d")],
            "--dead_letter: ",
        ),
        (["--input", str(tmp_path / "in.jsonl"), "--output_table", "p:d.t", "--resume"], "--resume writes files"),
        (
            ["--input", str(tmp_path / "in.jsonl"), "--output", "o", "--dead_letter_topic", "projects/p/topics/t"]
            + ["--resume"],
            "--resume writes files only: leave out --dead_letter_topic",
        ),
        (["--input", str(tmp_path / "in.jsonl"), "--output", "o", "--max_line_bytes", "0"], "--max_line_bytes: must"),
        (
            ["--input", str(tmp_path / "in.jsonl"), "--output", "gs://b/o", *DATAFLOW_DRY_RUN],
            "--input: " + repr(str(tmp_path / "in.jsonl")) + " is on this machine, out of the workers' reach",
        ),
        (["--input", "gs://b/in.jsonl", "--output", "gs://b/o", "--resume", *DATAFLOW_DRY_RUN], "--resume runs on"),
    ]
    for args, message in cases:
        with pytest.raises(UsageError) as caught:
            run(args + model)
        assert message in str(caught.value) and "\n" not in str(caught.value), args
    # The command line turns them into one line and exit code 2.
    done = _cli("--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o"), *model)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"error: --input: no file matches {str(tmp_path / 'missing.jsonl')!r}: check the path (a glob may use *, ? "
            "and [...])"
        )
    )


def test_file_urls_and_a_line_length_limit(tmp_path, longclip_checkpoint, good_images):
    """`file://` works as a local path for inputs and outputs; a line over --max_line_bytes is dead-lettered
    with its own reason and its first bytes, and the lines after it are read."""
    long = json.dumps({"id": "long", "image_path": str(good_images["rgb.png"]), "text": "word " * 100})
    lines = [{"id": n, "image_path": str(good_images["rgb.png"]), "text": "a cat"} for n in range(3)]
    (tmp_path / "in.jsonl").write_text("\n".join([json.dumps(lines[0]), long] + [json.dumps(r) for r in lines[1:]]))
    result = run(
        ["--input", (tmp_path / "in.jsonl").as_uri(), "--output", (tmp_path / "out" / "scored").as_uri()]
        + ["--model", str(longclip_checkpoint), "--max_line_bytes", "300"]
    )
    assert sorted(r["id"] for r in _read_jsonl(tmp_path / "out" / "scored")) == [0, 1, 2]
    (dead,) = _read_jsonl(tmp_path / "out" / "scored.dead_letter")
    assert (dead["reason"], dead["raw"], dead["source"]) == ("line_too_long", long[:1024], str(tmp_path / "in.jsonl"))
    assert f"is {len(long)} bytes, more than --max_line_bytes" in dead["error"]
    assert summarize(result)["dead_lettered_line_too_long"] == 1


@settings(max_examples=2)
@given(lines=st.lists(json_lines(["rgb.png", "no_such.png"]), min_size=20, max_size=40))
def test_fuzzed_lines_through_the_job_each_come_out_once(tmp_path, longclip_checkpoint, good_images, lines):
    """Fuzzing the job: JSON lines, damaged ones, deep ones and raw bytes; each line becomes exactly one scored
    record or one dead-letter entry, and the job does not fail."""
    folder = tmp_path / str(next(_FUZZ_RUNS))
    folder.mkdir()
    (folder / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    result = run(
        ["--input", str(folder / "in.jsonl"), "--output", str(folder / "scored"), "--model", str(longclip_checkpoint)]
        + ["--image_root", str(good_images["rgb.png"].parent), "--max_batch_size", "8"]
    )
    scored, dead = _read_jsonl(folder / "scored"), _read_jsonl(folder / "scored.dead_letter")
    assert len(scored) + len(dead) == len(lines) == summarize(result)["read"]
    assert all(0.0 <= record["longclip_score"] <= 1.0 for record in scored)


_FUZZ_RUNS = itertools.count()


def test_a_failed_local_job_leaves_no_temporary_folders(tmp_path, longclip_checkpoint):
    """Beam's file sinks left their beam-temp-* folders beside the outputs when a job failed."""
    from pipeline.job import run_plan
    from pipeline.preflight import preflight

    (tmp_path / "in.jsonl").write_text('{"text": "a cat"}\n')
    out = tmp_path / "out"
    plan = preflight(parse(["--input", str(tmp_path / "in.jsonl"), "--output", str(out / "scored")]
                           + ["--model", str(longclip_checkpoint)]))  # fmt: skip
    (tmp_path / "in.jsonl").unlink()  # gone between the plan and the run: the job fails
    with pytest.raises(Exception, match="No such file"):
        run_plan(plan, progress_interval_secs=None)
    # The run record stays (what ran, and that it did not finish); nothing temporary does.
    assert not out.exists() or [path.name for path in out.iterdir()] == ["scored.run.json"]
