"""How `python -m pipeline` ends: without the interpreter's slow teardown, but losing nothing on the way out."""

import os
import subprocess
import sys

from tests.support.paths import REPO_ROOT

_PROGRAM = """
import atexit, sys, threading, time
from pipeline.__main__ import exit_without_teardown

folder = sys.argv[1]
atexit.register(lambda: open(folder + "/atexit", "w").write("ran"))
if sys.argv[2] == "thread":
    def work():
        time.sleep(0.5)
        open(folder + "/thread", "w").write("done")
    threading.Thread(target=work).start()
print("buffered output", end="")
exit_without_teardown(3)
"""


def _run(tmp_path, mode):
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-c", _PROGRAM, str(tmp_path), mode],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,  # buffered, as stdout to a pipe or file is by default
    )


def test_exit_handlers_run_output_is_flushed_and_the_code_kept(tmp_path):
    done = _run(tmp_path, "alone")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered output"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_thread_still_working_is_waited_for(tmp_path):
    done = _run(tmp_path, "thread")
    assert done.returncode == 3, done.stderr
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran" and done.stdout == "buffered output"
