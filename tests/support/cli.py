"""Running `python -m pipeline` as a user does: a separate process from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

from tests.support.paths import REPO_ROOT


def run_job(*args: str, timeout: float = 600, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """The job's exit code, stdout and stderr; Python's own warnings are left out of stderr, `env` adds to ours."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
    )
