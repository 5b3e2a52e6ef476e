"""`bench/gpu.sh`: LongCLIP-L/14-336 on one GPU in bf16 (about 5 minutes on an H200).

Prints pairs/s of ScoreLongCLIP in a FnApiRunner pipeline, its ratio to a bare model loop over
pre-decoded tensors (same batch size) and to the row-at-a-time evaluator (same precision), and the
bf16 and fp16 score deviations from fp32 on the same pairs. `--device cpu --smoke` checks it runs.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch

from bench import models, workload
from bench.baseline import RowAtATimeEvaluator
from bench.runs import PreDecoded, bare_loop, run_pipeline, timed
from transforms.longclip_model import LongCLIPScorer, build_model, load_state_dict, pick_device


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/gpu.sh", description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="L14-336", choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp16"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--pairs", type=int, default=1024, help="records (distinct images) per pipeline / bare-loop run"
    )
    parser.add_argument("--baseline-pairs", type=int, default=64)
    parser.add_argument("--deviation-pairs", type=int, default=512)
    parser.add_argument("--prepare-threads", type=int, default=os.cpu_count() or 4)
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes: checks the script runs")
    return parser.parse_args()


def main() -> None:
    args = _args()
    if args.smoke:
        args.arch, args.batch_size, args.pairs, args.baseline_pairs, args.deviation_pairs = "tiny", 4, 16, 4, 16
    device = pick_device(args.device)
    started = time.perf_counter()
    checkpoint = str(models.checkpoint(args.arch))
    images = workload.write_images(models.cache_dir() / "images", args.pairs)
    texts = workload.captions(max(args.pairs, args.deviation_pairs), "mixed")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"LongCLIP-{args.arch} shapes, random weights, on {name}; inputs ready in {time.perf_counter() - started:.0f} s"
    )

    torch.backends.cudnn.allow_tf32 = False  # the fp32 reference must be fp32 (convolutions default to TF32)
    base = build_model(load_state_dict(checkpoint))
    scorers = {p: LongCLIPScorer(copy.deepcopy(base), device, p) for p in ("fp32", "bf16", "fp16")}
    del base
    fast = scorers[args.precision]
    pin = device.type == "cuda"

    # Deviation from fp32 on the same pairs (also the warm-up).
    sample = workload.records(images, texts[: args.deviation_pairs], captions_per_image=2)
    data = PreDecoded(sample, fast.image_resolution, fast.context_length)
    reference = bare_loop(scorers["fp32"], data, args.batch_size, pin)
    for precision in ("bf16", "fp16"):
        scores = bare_loop(scorers[precision], data, args.batch_size, pin)
        gaps = [abs(a - b) for a, b in zip(scores, reference, strict=True)]
        mean = sum(gaps) / len(gaps)
        print(f"{precision} vs fp32 score: max |diff| {max(gaps):.2e}, mean {mean:.2e} ({len(gaps)} pairs)")
    del scorers["fp32"]

    records = workload.records(images, texts[: args.pairs])
    data = PreDecoded(records, fast.image_resolution, fast.context_length)
    bare_seconds, _ = timed(bare_loop, fast, data, args.batch_size, pin)
    steady, wall, _ = run_pipeline(
        records,
        checkpoint,
        batch_size=args.batch_size,
        device=str(device),
        precision=args.precision,
        prepare_threads=args.prepare_threads,
    )
    evaluator = RowAtATimeEvaluator(fast)
    evaluator.score_all(records[:2])  # warm-up
    baseline_seconds, _ = timed(evaluator.score_all, records[: args.baseline_pairs])

    pipeline_rate = len(records) / steady
    bare_rate = len(records) / bare_seconds
    baseline_rate = args.baseline_pairs / baseline_seconds
    print(f"{len(records)} unique pairs, mixed caption lengths, batch {args.batch_size}, {args.precision}:")
    print(
        f"  pipeline (ScoreLongCLIP, FnApiRunner, {args.prepare_threads} prepare threads): {pipeline_rate:.1f} pairs/s"
    )
    print(f"    with pipeline start and model load: {len(records) / wall:.1f} pairs/s")
    print(f"  bare model loop over pre-decoded tensors: {bare_rate:.1f} pairs/s")
    print(f"  row-at-a-time evaluator: {baseline_rate:.1f} pairs/s")
    print(f"  pipeline / bare model loop: {pipeline_rate / bare_rate:.2f}x")
    print(f"  pipeline / row-at-a-time: {pipeline_rate / baseline_rate:.2f}x")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
