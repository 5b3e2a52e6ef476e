"""`python -m pipeline.report` as a user runs it: flags, field names, any FileSystems scheme."""

import json
import subprocess
import sys

import pytest

from pipeline.cli.kit import UsageError
from pipeline.report.job import parse, run
from tests.support.paths import REPO_ROOT
from tests.support.scored import make_scored_rows, scores_of, write_jsonl

REPORT_FILES = {"summary.json", "report.html", "report_data.json"} | {
    "histogram.png", "retention.png", "score_by_length.png", "failures.png",
}  # fmt: skip


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.report", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--output", "out"], "--input: is required"),  # found before Beam is imported
        (["--input", "/no/such/dir/*.jsonl", "--output", "out"], "--input: no file matches '/no/such/dir/*.jsonl'"),
    ],
)
def test_bad_flags_exit_2_with_a_one_line_error(args, message):
    done = _cli(*args)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]  # after argparse's usage, the error on one line
    assert last.startswith("python -m pipeline.report: error: ") and message in last, done.stderr[-2000:]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "x"], "--output: is required"),
        (["--input", "x", "--output", "y", "--rows_shown", "0"], "--rows_shown: must be at least 1, got 0"),
        (["--input", "x", "--output", "y", "--bogus", "1"], r"unknown flag\(s\) --bogus"),
        (["--input", "x", "--output", "y", "--max_image_bytes", "0"], "--max_image_bytes: must be at least 1"),
    ],
)
def test_bad_flags_are_usage_errors(args, message, tmp_path):
    existing = str(write_jsonl(tmp_path / "x.jsonl", make_scored_rows(3)))  # so that the flag under test fails
    with pytest.raises(UsageError, match=message):
        parse([existing if arg == "x" else arg for arg in args])


def test_help_imports_neither_beam_nor_matplotlib():
    code = (
        "import sys\nfrom pipeline.report.__main__ import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
        "print('IMPORTED', sorted(m for m in ('apache_beam', 'matplotlib', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert "IMPORTED []" in done.stdout, done.stderr
    for flag in ("--input", "--output", "--output_key", "--text_key", "--image_key", "--image_root", "--rows_shown"):
        assert flag in done.stdout


@pytest.mark.slow
def test_cli_with_other_field_names(tmp_path):
    rows = [
        {"pic": r["image_path"], "caption": r["text"], "s": r["longclip_score"], "s_reason": r["longclip_score_reason"]}
        for r in make_scored_rows(200, seed=5)
    ]
    write_jsonl(tmp_path / "in" / "rows.jsonl", rows)
    done = _cli(
        "--input", str(tmp_path / "in" / "*.jsonl"), "--output", str(tmp_path / "report"),
        "--output_key", "s", "--text_key", "caption", "--image_key", "pic", "--rows_shown", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert {path.name for path in (tmp_path / "report").iterdir()} == REPORT_FILES
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["scored"] == sum(r["s_reason"] is None for r in rows) and summary["output_key"] == "s"
    data = json.loads((tmp_path / "report" / "report_data.json").read_text())
    assert len(data["lowest"]) == 3 and data["lowest"][0]["image"] == "img/a.jpg"
    assert sum(map(sum, data["by_length"])) == summary["scored"]


def test_report_reads_and_writes_gcs(gcs_bucket, tmp_path):
    """Input and output on gs:// (the GCS emulator), as on Dataflow."""
    rows = make_scored_rows(300, seed=6)
    gcs_bucket.blob("scored/part-0.jsonl").upload_from_string("".join(json.dumps(r) + "\n" for r in rows))
    bucket = f"gs://{gcs_bucket.name}"
    summary = run(["--input", f"{bucket}/scored/*.jsonl", "--output", f"{bucket}/report"])
    assert summary["scored"] == len(scores_of(rows))
    names = {blob.name for blob in gcs_bucket.list_blobs(prefix="report/")}
    assert {f"report/{name}" for name in REPORT_FILES} <= names
    stored = json.loads(gcs_bucket.blob("report/summary.json").download_as_text())
    assert stored == summary


@pytest.mark.slow
def test_a_report_folder_inside_the_input_glob_is_not_read(tmp_path):
    rows = make_scored_rows(50, seed=8)
    write_jsonl(tmp_path / "scored-0.jsonl", rows)
    first = run(["--input", str(tmp_path / "*"), "--output", str(tmp_path / "report")])
    again = run(["--input", str(tmp_path / "*"), "--output", str(tmp_path / "report")])
    assert first == again and first["rows"] == 50


def test_empty_input_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no file matches"):
        run(["--input", str(tmp_path / "*.jsonl"), "--output", str(tmp_path / "report")])


@pytest.mark.slow
@pytest.mark.parametrize("where", ["read-only file system", "a file in the way"])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, where):
    write_jsonl(tmp_path / "in" / "scored.jsonl", make_scored_rows(5))
    if where == "read-only file system":
        output, reason = "/sys/longclip-report", "operation not permitted"  # sysfs: read-only, even for root
    else:
        (tmp_path / "taken").write_text("a file")
        output, reason = str(tmp_path / "taken" / "report"), "not a directory"
    done = _cli("--input", str(tmp_path / "in" / "*.jsonl"), "--output", output)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"python -m pipeline.report: error: --output: cannot write in {output}: {reason}; "
        "choose a folder you can write to"
    ), done.stderr[-2000:]


def test_the_report_does_not_load_torch():
    """It decodes thumbnails with Pillow only; torch came in with the image decoder's module (1.4 s and ~600 MB of
    resident memory before the first row was read)."""
    code = "import sys, pipeline.report.job; print(sorted({'torch', 'open_clip'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]
