"""Dataset formats and embeddings, side by side: part of `make bench`, or alone with `python -m bench.formats`.

- The job's WebDataset reader (image bytes inline in a shard) against its JSONL reader (image paths), on the
  same records and the same image files: inline images save a file open per record and must not cost more.
- `--embeddings` against none: the features come from the same forward pass, so they must cost almost nothing.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import models, workload
from bench.runs import run_pipeline
from pipeline.sources import ReadJsonLines
from pipeline.webdataset import ReadWebDataset
from transforms import RecordFields

TARGETS = {
    "WebDataset inline images / JSONL image paths": 1.0,
    "with --embeddings / without": 0.95,
}


def input_formats(report, records: list[dict], checkpoint: str, *, batch_size: int, device: str, repeats: int) -> None:
    """Pipeline throughput reading `records` from a WebDataset shard and from JSONL, interleaved, best of repeats."""
    best, scores = {"jsonl": float("inf"), "webdataset": float("inf")}, {}
    with tempfile.TemporaryDirectory() as folder:
        jsonl = str(workload.write_jsonl(Path(folder) / "captions.jsonl", records))
        shard = str(workload.write_webdataset(Path(folder) / "00000.tar", records))
        for _ in range(repeats):
            for name, source in (("jsonl", ReadJsonLines(jsonl)), ("webdataset", ReadWebDataset(shard))):
                steady, _, scores[name] = run_pipeline(
                    records, checkpoint, batch_size=batch_size, device=device, source=source
                )
                best[name] = min(best[name], steady)
    deviation = max(abs(a - b) for a, b in zip(scores["jsonl"], scores["webdataset"], strict=True))
    report.add(f"JSONL, image paths: pipeline, batch {batch_size}", f"{len(records) / best['jsonl']:.2f} pairs/s")
    report.add(
        f"WebDataset shard, inline images: pipeline, batch {batch_size}",
        f"{len(records) / best['webdataset']:.2f} pairs/s",
        f"(max |score diff| {deviation:.1e})",
    )
    name = "WebDataset inline images / JSONL image paths"
    report.ratio(name, best["jsonl"] / best["webdataset"], TARGETS[name])


def embeddings_cost(report, records: list[dict], checkpoint: str, *, batch_size: int, device: str, repeats: int):
    """Pipeline throughput with and without embeddings on the same records, interleaved, best of repeats."""
    best, scores = {False: float("inf"), True: float("inf")}, {}
    for _ in range(repeats):
        for wanted in (False, True):
            steady, _, scores[wanted] = run_pipeline(
                records, checkpoint, batch_size=batch_size, device=device, fields=RecordFields(embeddings=wanted)
            )
            best[wanted] = min(best[wanted], steady)
    deviation = max(abs(a - b) for a, b in zip(scores[False], scores[True], strict=True))
    report.add(f"without --embeddings: pipeline, batch {batch_size}", f"{len(records) / best[False]:.2f} pairs/s")
    report.add(
        f"with --embeddings: pipeline, batch {batch_size}",
        f"{len(records) / best[True]:.2f} pairs/s",
        f"(max |score diff| {deviation:.1e})",
    )
    name = "with --embeddings / without"
    report.ratio(name, best[False] / best[True], TARGETS[name])


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
