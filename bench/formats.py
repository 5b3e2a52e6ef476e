"""Dataset formats and embeddings, side by side: part of `make bench`, or alone with `python -m bench.formats`.

- The job's WebDataset reader (image bytes inline in a shard) against its JSONL reader (image paths), on the
  same records and the same image files: inline images save a file open per record and must not cost more.
- `--embeddings` against none: the features come from the same forward pass, so they must cost almost nothing.

Each is timed twice: by steady wall time (throughput, what a dedicated machine shows) and by the process's
CPU time over the same span (the work done, which other processes on a shared machine move much less).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import models, workload
from bench.runs import PipelineRun, measure_pipeline
from pipeline.cli.declarations import InputOptions
from pipeline.io.jsonl import ReadJsonLines
from pipeline.io.parts import plan_parts
from pipeline.io.webdataset import ReadWebDataset
from transforms import RecordFields

TARGETS = {
    "WebDataset inline images / JSONL image paths": 1.0,
    "with --embeddings / without": 0.95,
}


def input_formats(report, records: list[dict], checkpoint: str, *, batch_size: int, device: str, repeats: int) -> None:
    """Pipeline throughput reading `records` from a WebDataset shard and from JSONL, interleaved, best of repeats."""
    runs: dict[str, list[PipelineRun]] = {"jsonl": [], "webdataset": []}
    with tempfile.TemporaryDirectory() as folder:
        jsonl = str(workload.write_jsonl(Path(folder) / "captions.jsonl", records))
        shard = str(workload.write_webdataset(Path(folder) / "00000.tar", records))
        for _ in range(repeats):
            readers = (
                ("jsonl", ReadJsonLines(plan_parts(jsonl), InputOptions().max_line_bytes)),
                ("webdataset", ReadWebDataset(shard)),
            )
            for name, source in readers:
                runs[name].append(
                    measure_pipeline(records, checkpoint, batch_size=batch_size, device=device, source=source)
                )
    labels = {"jsonl": "JSONL, image paths", "webdataset": "WebDataset shard, inline images"}
    _compare(report, records, runs, labels, "WebDataset inline images / JSONL image paths", batch_size)


def embeddings_cost(report, records: list[dict], checkpoint: str, *, batch_size: int, device: str, repeats: int):
    """Pipeline throughput with and without embeddings on the same records, interleaved, best of repeats."""
    runs: dict[str, list[PipelineRun]] = {"without": [], "with": []}
    for _ in range(repeats):
        for name in runs:
            fields = RecordFields(embeddings=name == "with")
            runs[name].append(
                measure_pipeline(records, checkpoint, batch_size=batch_size, device=device, fields=fields)
            )
    labels = {"without": "without --embeddings", "with": "with --embeddings"}
    _compare(report, records, runs, labels, "with --embeddings / without", batch_size)


def _compare(report, records, runs: dict[str, list[PipelineRun]], labels: dict, ratio: str, batch_size: int) -> None:
    """Reports each variant's best throughput and CPU time per pair, and the ratio of the second to the first."""
    base, other = runs
    best = {name: min(run.steady for run in runs[name]) for name in runs}
    cpu = {name: min(run.cpu for run in runs[name]) for name in runs}
    deviation = max(abs(a - b) for a, b in zip(runs[base][-1].scores, runs[other][-1].scores, strict=True))
    for name in runs:
        report.add(
            f"{labels[name]}: pipeline, batch {batch_size}",
            f"{len(records) / best[name]:.2f} pairs/s",
            f"({1000 * cpu[name] / len(records):.0f} ms CPU per pair)",
        )
    report.ratio(ratio, best[base] / best[other], TARGETS[ratio])
    report.ratio(f"{ratio}, by CPU time per pair", cpu[base] / cpu[other], TARGETS[ratio])
    report.add(f"{ratio}: max |score diff|", f"{deviation:.1e}")


def main() -> None:
    from bench.__main__ import Report  # the table `make bench` prints

    parser = argparse.ArgumentParser(prog="python -m bench.formats", description=__doc__)
    parser.add_argument("--arch", default="B16", choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    checkpoint = str(models.checkpoint(args.arch))
    images = workload.write_images(models.cache_dir() / "images", 64)
    records = workload.records(images, workload.captions(args.pairs, "mixed"))
    report = Report()
    run = dict(batch_size=args.batch_size, device=args.device, repeats=args.repeats)
    input_formats(report, records, checkpoint, **run)
    embeddings_cost(report, records, checkpoint, **run)
    report.print()


if __name__ == "__main__":
    main()
