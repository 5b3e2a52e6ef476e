"""Peak memory of the real job (`python -m pipeline`) over a short and a long input.

Run as `python -m bench.memory INPUT OUTPUT MODEL [JOB FLAGS...]`: runs the job in this process, then
prints its peak resident set size (VmHWM). One process per input size, so each peak is that run's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.workload import captions


def peak_rss_mib() -> float:
    """This process's peak resident set size, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def write_input(path: Path, images: list[Path], count: int) -> Path:
    """`count` JSONL records cycling over `images` and 50 captions of mixed length, each made unique."""
    texts = captions(50, "mixed", seed=7)
    with path.open("w") as out:
        for index in range(count):
            text = f"record {index}. {texts[index % len(texts)]}"
            out.write(json.dumps({"id": index, "image_path": str(images[index % len(images)]), "text": text}) + "\n")
    return path


def measure(input_path: Path, output_prefix: Path, checkpoint: Path, *job_flags: str) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of the job over `input_path`, run in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", str(input_path), str(output_prefix), str(checkpoint), *job_flags],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def main(argv: list[str]) -> None:
    from pipeline.job import run

    input_path, output_prefix, checkpoint, *job_flags = argv
    run(["--input", input_path, "--output", output_prefix, "--model", checkpoint, "--device", "cpu", *job_flags])
    print(f"{peak_rss_mib():.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
