"""`python -m bench.long_captions`: what scoring captions in chunks, and sentence by sentence, costs.

Side by side in one process, interleaved, best of repeats (`make bench` runs it too):
- `long_captions=chunks` against `truncate` on captions that all fit (the same work: the ratio should be ~1);
- on 600-token captions: throughput of both, image-tower passes per record (each image encoded once) and
  text-tower tokens per record (what chunks add);
- `sentence_scores` on 8-sentence captions (no sentence shared between records) against the plain score.

The tower work is counted by wrapping the scorer's `encode_images` and `encode_texts` in this process
(the FnApiRunner runs the model here).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
from typing import Iterator

from bench import models, workload
from bench.runs import PipelineRun, measure_pipeline
from transforms.model.scorer import LongCLIPScorer, pad_tokens
from transforms.settings import RecordFields
from transforms.testing.sentence_cases import PARAGRAPHS, long_caption

TARGETS = {"chunks / truncate, captions that fit": 0.95}

_WORK: collections.Counter = collections.Counter()


@contextlib.contextmanager
def counted_towers() -> Iterator[collections.Counter]:
    """Counts image rows and text tokens (up to each EOT, as the text tower runs them) while inside."""
    encode_images, encode_texts = LongCLIPScorer.encode_images, LongCLIPScorer.encode_texts

    def images(self, pixels):
        _WORK["image rows"] += len(pixels)
        return encode_images(self, pixels)

    def texts(self, token_ids):
        _WORK["text tokens"] += int((pad_tokens(token_ids, self.context_length).argmax(-1) + 1).sum())
        _WORK["texts"] += len(token_ids)
        return encode_texts(self, token_ids)

    LongCLIPScorer.encode_images, LongCLIPScorer.encode_texts = images, texts
    try:
        _WORK.clear()
        yield _WORK
    finally:
        LongCLIPScorer.encode_images, LongCLIPScorer.encode_texts = encode_images, encode_texts


def distinct_sentences(count: int, seed: int) -> str:
    """A caption of `count` sentences from the paragraphs, each made unlike any other caption's (the scorer
    encodes a text once per batch, so sentences repeated across records would make sentence scores look cheap)."""
    pool = [sentence for paragraph in PARAGRAPHS for sentence in paragraph.sentences]
    rng = random.Random(seed)
    chosen = [rng.choice(pool) for _ in range(count)]
    return " ".join(f"In view {seed}.{k}, {sentence[0].lower()}{sentence[1:]}" for k, sentence in enumerate(chosen))


def _records(images, captions: list[str]) -> list[dict]:
    return [{"id": n, "image_path": str(images[n % len(images)]), "text": text} for n, text in enumerate(captions)]


def long_captions(report, images, checkpoint: str, *, pairs: int, batch_size: int, device: str, repeats: int) -> None:
    run = dict(batch_size=batch_size, device=device)
    variants = {
        "truncate": RecordFields(),
        "chunks": RecordFields(long_captions="chunks"),
        "sentences": RecordFields(sentence_scores=True),
    }
    workloads = {
        "captions that fit": _records(images, workload.captions(pairs, "mixed", seed=7)),
        "600-token captions": _records(images, [long_caption(27, seed=100 + n) for n in range(pairs)]),
        "8-sentence captions": _records(images, [distinct_sentences(8, seed=200 + n) for n in range(pairs)]),
    }
    compared = {
        "captions that fit": ("truncate", "chunks"),
        "600-token captions": ("truncate", "chunks"),
        "8-sentence captions": ("truncate", "sentences"),
    }
    for name, records in workloads.items():
        runs: dict[str, list[PipelineRun]] = {variant: [] for variant in compared[name]}
        work: dict[str, collections.Counter] = {}
        for _ in range(repeats):
            for variant in runs:
                with counted_towers() as counts:
                    runs[variant].append(measure_pipeline(records, checkpoint, fields=variants[variant], **run))
                work[variant] = collections.Counter(counts)
        best = {variant: min(r.steady for r in runs[variant]) for variant in runs}
        for variant in runs:
            per_record = {key: value / len(records) for key, value in work[variant].items()}
            report.add(
                f"{name}, {variant}: pipeline, batch {batch_size}",
                f"{len(records) / best[variant]:.2f} pairs/s",
                f"(image-tower passes per record {per_record['image rows']:.2f}, text-tower tokens per record "
                f"{per_record['text tokens']:.0f}, texts per record {per_record['texts']:.1f})",
            )
        base, other = compared[name]
        ratio = f"{other} / {base}, {name}"
        report.ratio(ratio, best[base] / best[other], TARGETS.get(ratio))


def main() -> None:
    from bench.__main__ import Report  # the table `make bench` prints

    parser = argparse.ArgumentParser(prog="python -m bench.long_captions", description=__doc__)
    parser.add_argument("--arch", default="B16", choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images = workload.write_images(models.cache_dir() / "images", 64)
    report = Report()
    long_captions(
        report,
        images,
        str(models.checkpoint(args.arch)),
        pairs=args.pairs,
        batch_size=args.batch_size,
        device=args.device,
        repeats=args.repeats,
    )
    report.print()


if __name__ == "__main__":
    main()
