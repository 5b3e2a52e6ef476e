"""The Dataflow-like setup: several SDK worker processes on one machine, a model per process or one shared.

Runs the job as users do (`python -m pipeline`) on Beam's multi-process local runner, which starts
`--direct_num_workers` SDK worker processes, as a Dataflow VM runs one per vCPU. Reports pairs/s (wall time,
start and model loads included) and, on a GPU, the most device memory in use during the run (sampled from
this process, less what was in use before it started).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import torch


class ProcessesRun(NamedTuple):
    pairs_per_second: float
    peak_gpu_bytes: Optional[int]  # None on a CPU
    model_loads: int


def run_processes(
    records: Sequence[dict],
    checkpoint: str,
    *,
    processes: int,
    shared: bool,
    device: str,
    precision: str,
    batch_size: int,
) -> ProcessesRun:
    with tempfile.TemporaryDirectory(prefix="longclip-bench-") as folder:
        source = Path(folder) / "records.jsonl"
        source.write_text("".join(json.dumps(record) + "\n" for record in records))
        argv = [
            sys.executable, "-m", "pipeline", "--input", str(source), "--output", str(Path(folder) / "out"),
            "--model", checkpoint, "--device", device, "--precision", precision,
            "--min_batch_size", str(batch_size), "--max_batch_size", str(batch_size),
            "--direct_num_workers", str(processes), "--direct_running_mode", "multi_processing",
        ] + (["--share_model_across_processes"] if shared else [])  # fmt: skip
        sampler = _GpuMemorySampler(torch.device(device)) if device.startswith("cuda") else None
        start = time.perf_counter()
        with sampler or _Nothing():
            done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"the job failed: {done.stderr[-3000:]}")
        written = sum(1 for path in Path(folder).glob("out-*.jsonl") for _ in path.open())
        if written != len(records):
            raise RuntimeError(f"{written} of {len(records)} records written")
    return ProcessesRun(
        len(records) / seconds,
        sampler.peak if sampler else None,
        done.stderr.count("Loaded LongCLIP checkpoint"),
    )


class _GpuMemorySampler:
    """Samples the device's memory in use (by every process) every 50 ms while in its `with` block."""

    def __init__(self, device: torch.device):
        self._device = device
        self._stop = threading.Event()
        self.peak = 0

    def __enter__(self) -> "_GpuMemorySampler":
        free, total = torch.cuda.mem_get_info(self._device)
        self._before = total - free
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            free, total = torch.cuda.mem_get_info(self._device)
            self.peak = max(self.peak, total - free - self._before)


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None
