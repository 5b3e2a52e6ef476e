"""`--resume`: a real `python -m pipeline` killed half-way (SIGKILL) and run again ends with every line once."""

import json
import logging
import os
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
        while len(list(out.glob("scored-part-*.jsonl"))) < 2 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
    finally:
        job.kill()
    done_before = len(list(out.glob("scored-part-*.jsonl")))
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
