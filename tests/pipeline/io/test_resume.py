"""`--resume`: a real `python -m pipeline` killed half-way (SIGKILL) and run again ends with every line once."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline import UsageError, run, summarize
from tests.support.paths import REPO_ROOT

FILES, RECORDS = 8, 12  # per file, plus one line that is not JSON


@pytest.fixture
def slow_images(good_images):
    """An HTTP server on loopback that takes 50 ms per image, so that the job is still running when killed."""
    body = good_images["rgb.png"].read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(0.05)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _write_inputs(folder, url) -> None:
    folder.mkdir()
    for f in range(FILES):
        lines = [
            json.dumps({"id": f"{f}-{i}", "image_path": f"{url}/{f}-{i}.png", "text": "a cat"}) for i in range(RECORDS)
        ]
        (folder / f"in-{f}.jsonl").write_text("\n".join(lines[:5] + ["not json"] + lines[5:]) + "\n")


def _outputs(folder, prefix):
    return [json.loads(line) for path in sorted(folder.glob(f"{prefix}-part-*.jsonl")) for line in path.open()]


@pytest.mark.slow
def test_a_killed_job_resumes_where_it_stopped_and_every_line_comes_out_once(
    tmp_path, slow_images, longclip_checkpoint, caplog
):
    _write_inputs(tmp_path / "in", slow_images)
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "in" / "*.jsonl"), "--output", str(out / "scored"), "--resume"]
    argv += ["--model", str(longclip_checkpoint), "--prepare_threads", "1", "--max_batch_size", "4"]
    job = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *argv],
        cwd=REPO_ROOT,
        stderr=(tmp_path / "first.log").open("w"),
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("scored.resume/part-*.json"))) < 2 and job.poll() is None:
            time.sleep(0.02)
            if time.monotonic() > deadline:
                break
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
    finally:
        job.kill()
    done_before = len(list(out.glob("scored.resume/part-*.json")))  # a part's manifest, written last, says done
    assert 2 <= done_before < FILES, (done_before, (tmp_path / "first.log").read_text()[-3000:])

    with caplog.at_level(logging.INFO, logger="pipeline"):
        result = run(argv)
    counts = summarize(result)
    # The rerun read only the parts without outputs; the others were not opened again.
    assert f"Resume: {done_before} of {FILES} part(s)" in caplog.text
    assert counts["read"] == (FILES - done_before) * (RECORDS + 1) and counts["parts_done"] == FILES - done_before

    scored, dead = _outputs(out, "scored"), _outputs(out, "scored.dead_letter")
    everything = sorted(f"{f}-{i}" for f in range(FILES) for i in range(RECORDS))
    assert sorted(record["id"] for record in scored) == everything
    assert all(record["longclip_score_error"] is None for record in scored)
    assert sorted(entry["source"] for entry in dead) == sorted(
        str(tmp_path / "in" / f"in-{f}.jsonl") for f in range(FILES)
    )
    # What is done stays done: a third run reads nothing.
    assert summarize(run(argv)).get("read", 0) == 0
    assert len(_outputs(out, "scored")) == FILES * RECORDS


def test_resume_refuses_outputs_of_a_run_without_it(tmp_path, longclip_checkpoint):
    (tmp_path / "in.jsonl").write_text('{"text": "a cat"}\n')
    (tmp_path / "scored-00000-of-00001.jsonl").write_text("{}\n")
    with pytest.raises(UsageError, match="scored-00000-of-00001.jsonl is from a run without --resume"):
        run(["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "scored"), "--resume"]
            + ["--model", str(longclip_checkpoint)])  # fmt: skip


def _captions(path, image, count, start=0) -> None:
    """`count` lines of one image and a numbered caption, every tenth line not JSON."""
    with path.open("a") as stream:
        for n in range(start, start + count):
            record = {"id": n, "image_path": image, "text": f"cat {n}"}
            stream.write("not json\n" if n % 10 == 9 else json.dumps(record) + "\n")


def _ids(folder, prefix) -> list:
    return sorted(record.get("id") for record in _outputs(folder, prefix))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["multi_processing", "multi_threading", "in_memory"])
def test_two_local_workers_write_every_line_of_a_part_once(tmp_path, good_images, longclip_checkpoint, mode):
    """Each of several bundles used to rename its file over the part's: 2 workers kept half the lines.
    (Worker processes start for each part's pipeline: one part there, several in the other modes.)"""
    _captions(tmp_path / "in.jsonl", str(good_images["rgb.png"]), 200)
    part_bytes = "100000" if mode == "multi_processing" else "8000"
    argv = ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "scored"), "--resume"]
    argv += ["--model", str(longclip_checkpoint), "--max_batch_size", "8", "--input_part_bytes", part_bytes]
    argv += ["--direct_num_workers", "2", "--direct_running_mode", mode]
    counts = summarize(run(argv))
    scored, dead = _ids(tmp_path / "out", "scored"), _outputs(tmp_path / "out", "scored.dead_letter")
    assert scored == [n for n in range(200) if n % 10 != 9]
    assert len(dead) == 20 and counts["read"] == 200
    parts = -(-(tmp_path / "in.jsonl").stat().st_size // int(part_bytes))
    assert counts["parts_done"] == len(list((tmp_path / "out").glob("scored-part-*.jsonl"))) == parts
    assert parts == 1 if mode == "multi_processing" else parts > 1


def _small_job(tmp_path, good_images, longclip_checkpoint, lines=30):
    _captions(tmp_path / "in.jsonl", str(good_images["rgb.png"]), lines)
    argv = ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out" / "scored"), "--resume"]
    return argv + ["--model", str(longclip_checkpoint), "--input_part_bytes", "700"]


@pytest.mark.slow
def test_resume_refuses_a_rerun_that_differs_from_the_run_that_began(tmp_path, good_images, longclip_checkpoint):
    """Appended lines, another part size or --output_key used to give duplicates or mixed schemas, exit 0."""
    argv = _small_job(tmp_path, good_images, longclip_checkpoint)
    run(argv)
    before = sorted((tmp_path / "out").rglob("*"))
    cases = [
        (["--input_part_bytes", "900"], "--input_part_bytes was 700 when this output's run began and is 900 now"),
        (["--output_key", "s"], "--output_key was 'longclip_score' when this output's run began and is 's' now"),
        (["--dead_letter", str(tmp_path / "out" / "dead")], "--dead_letter was "),
    ]
    for extra, message in cases:
        with pytest.raises(UsageError, match="^--resume: " + re.escape(message)) as caught:
            run(argv + extra)
        assert "run with the same flags and input to go on, or pass a new --output" in str(caught.value)
    _captions(tmp_path / "in.jsonl", str(good_images["rgb.png"]), 5, start=30)
    with pytest.raises(UsageError, match=re.escape(f"--input file {tmp_path / 'in.jsonl'} changed since")):
        run(argv)
    assert sorted((tmp_path / "out").rglob("*")) == before  # a refusal changes nothing
    job = tmp_path / "out" / "scored.resume" / "job.json"
    job.rename(job.with_name("moved.json"))
    with pytest.raises(UsageError, match=r"^--resume: .*scored-part-.* is there but not .*job.json, which says"):
        run(argv)
    job.write_text("{")
    with pytest.raises(UsageError, match=r"^--resume: .*job.json cannot be read: "):
        run(argv)
    # --overwrite starts over: the earlier run's files go, every line of the input as it is now comes out once.
    summarize(run(argv + ["--overwrite"]))
    assert _ids(tmp_path / "out", "scored") == [n for n in range(35) if n % 10 != 9]
    assert not (tmp_path / "out" / "scored.resume" / "moved.json").exists()


@pytest.mark.slow
def test_a_truncated_or_edited_part_file_is_not_done(tmp_path, good_images, longclip_checkpoint, caplog):
    """A truncated part file used to count as done: its lost lines never came back, a broken line stayed."""
    argv = _small_job(tmp_path, good_images, longclip_checkpoint)
    run(argv)
    first, second, *rest = sorted((tmp_path / "out").glob("scored-part-*.jsonl"))
    first.write_bytes(first.read_bytes()[:-40])  # a broken last line, and lines lost
    second.write_bytes(second.read_bytes().replace(b"cat", b"dog", 1))  # same size, other bytes
    with caplog.at_level(logging.INFO, logger="pipeline"):
        counts = summarize(run(argv))
    assert counts["parts_done"] == 2 and f"Resume: {len(rest)} of {len(rest) + 2} part(s)" in caplog.text
    assert _ids(tmp_path / "out", "scored") == [n for n in range(30) if n % 10 != 9]  # every line once, all JSON
    assert len(_outputs(tmp_path / "out", "scored.dead_letter")) == 3


def test_resume_refuses_parquet_and_dead_letter_files_of_a_run_without_it(tmp_path, longclip_checkpoint):
    (tmp_path / "in.jsonl").write_text('{"text": "a cat"}\n')
    argv = ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "scored"), "--resume"]
    for name in ("scored-00000-of-00002.parquet", "scored.dead_letter-00000-of-00001.jsonl"):
        (tmp_path / name).write_text("{}\n")
        with pytest.raises(UsageError, match=f"{name} is from a run without --resume"):
            run(argv + ["--model", str(longclip_checkpoint)])
        (tmp_path / name).unlink()
