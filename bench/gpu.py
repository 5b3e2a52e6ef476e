"""`bench/gpu.sh`: LongCLIP-L/14-336 on one GPU in bf16 (about 5 minutes on an H200).

Prints pairs/s of ScoreLongCLIP in a FnApiRunner pipeline, its ratio to a bare model loop over
pre-decoded tensors (same batch size) and to the row-at-a-time evaluator (same precision), and the
score deviations of fp32, bf16 and fp16 from fp32 and from the original evaluator's GPU path on the
same pairs. Then the Dataflow-like setup (`bench/processes.py`): the job with several SDK worker processes,
a model per process against one shared model, pairs/s and GPU memory side by side.
`--device cpu --smoke` checks it runs.

The original evaluator on a GPU keeps LongCLIP's partial fp16 model: the weights its `convert_weights`
rounds stay fp16 and compute in fp16, LayerNorms compute in fp32. open_clip's builder for OpenAI-format
state dicts (`build_model_from_openai_state_dict(..., cast_dtype=fp16)`) makes the same model; it runs
here on open_clip's plain 248-position path, batch by batch, as that evaluator's model would.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch

from bench import models, workload
from bench.baseline import RowAtATimeEvaluator
from bench.processes import run_processes
from bench.runs import PreDecoded, bare_loop, run_pipeline, timed
from transforms.model.architecture import build_model, merge_positional_tables
from transforms.model.device import pick_device
from transforms.model.formats import read_checkpoint
from transforms.model.scorer import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, LongCLIPScorer, pad_tokens


def _synchronised(encode, scorer: LongCLIPScorer, device: torch.device):
    """`encode(scorer)`, waiting for the GPU to finish, so that timings are of the work, not its launch."""
    result = encode(scorer)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result


def original_gpu_path_scores(checkpoint: str, device: torch.device, data: PreDecoded, batch_size: int) -> list[float]:
    """Scores as LongCLIP's own model does on a GPU: partial fp16, LayerNorm in fp32, all 248 positions."""
    from open_clip.model import build_model_from_openai_state_dict

    state_dict = merge_positional_tables(read_checkpoint(checkpoint).state_dict)
    model = build_model_from_openai_state_dict(state_dict, quick_gelu=True, cast_dtype=torch.float16)
    model = model.to(device).eval()
    mean = torch.tensor(OPENAI_CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD, device=device).view(1, 3, 1, 1)
    scores: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(data.paths), batch_size):
            paths = data.paths[start : start + batch_size]
            pixels = torch.stack([data.pixels[path] for path in paths]).to(device).float().div(255)
            image = model.encode_image(((pixels - mean) / std).half()).float()
            tokens = pad_tokens(data.token_ids[start : start + batch_size], model.context_length).to(device)
            text = model.encode_text(tokens).float()
            image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
            scores += ((image * text).sum(-1).add(1).div(2).clamp(0, 1)).tolist()
    return scores


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
    parser.add_argument("--processes", type=int, default=4, help="SDK worker processes of the Dataflow-like run")
    parser.add_argument("--process-pairs", type=int, default=512, help="records of the Dataflow-like run")
    parser.add_argument("--smoke", action="store_true", help="tiny model and sizes: checks the script runs")
    return parser.parse_args()


def main() -> None:
    args = _args()
    if args.smoke:
        args.arch, args.batch_size, args.pairs, args.baseline_pairs, args.deviation_pairs = "tiny", 4, 16, 4, 16
        args.processes, args.process_pairs = 2, 16
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
    base = build_model(read_checkpoint(checkpoint))
    scorers = {p: LongCLIPScorer(copy.deepcopy(base), device, p) for p in ("fp32", "bf16", "fp16")}
    del base
    fast = scorers[args.precision]
    pin = device.type == "cuda"

    # Deviations on the same pairs (also the warm-up): from fp32, and from the original evaluator on a GPU.
    sample = workload.records(images, texts[: args.deviation_pairs], captions_per_image=2)
    data = PreDecoded(sample, fast.image_resolution, fast.context_length)
    scores = {precision: bare_loop(scorer, data, args.batch_size, pin) for precision, scorer in scorers.items()}
    references = {
        "fp32": scores["fp32"],
        "the original GPU path": original_gpu_path_scores(checkpoint, device, data, args.batch_size),
    }
    for reference_name, reference in references.items():
        for precision in ("fp32", "bf16", "fp16"):
            if precision == reference_name:
                continue
            gaps = [abs(a - b) for a, b in zip(scores[precision], reference, strict=True)]
            mean = sum(gaps) / len(gaps)
            print(
                f"{precision} vs {reference_name}: max |score diff| {max(gaps):.2e}, "
                f"mean {mean:.2e} ({len(gaps)} pairs)"
            )
    # Each tower alone, fp32 against the fast precision, on one batch of the same inputs.
    pixels = torch.stack([data.pixels[path] for path in data.paths[: args.batch_size]])
    ids = data.token_ids[: args.batch_size]
    towers = {"image": lambda s: s.encode_images(pixels), "text": lambda s: s.encode_texts(ids)}
    best = {}
    with torch.inference_mode():
        for _ in range(3):
            for tower, encode in towers.items():
                for precision in ("fp32", args.precision):
                    seconds, _ = timed(_synchronised, encode, scorers[precision], device)
                    best[tower, precision] = min(best.get((tower, precision), float("inf")), seconds)
    for tower in towers:
        fp32, fast_seconds = best[tower, "fp32"], best[tower, args.precision]
        print(
            f"{tower} tower, batch {args.batch_size}: fp32 {fp32 * 1e3:.1f} ms, {args.precision} "
            f"{fast_seconds * 1e3:.1f} ms: {fp32 / fast_seconds:.2f}x"
        )
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

    fp32_steady, _, _ = run_pipeline(
        records,
        checkpoint,
        batch_size=args.batch_size,
        device=str(device),
        precision="fp32",
        prepare_threads=args.prepare_threads,
    )
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
    print(
        f"  pipeline in fp32: {len(records) / fp32_steady:.1f} pairs/s; {args.precision} / fp32: "
        f"{fp32_steady / steady:.2f}x"
    )

    del scorers, fast, evaluator
    if device.type == "cuda":
        torch.cuda.empty_cache()
    process_records = workload.records(images, texts[: args.process_pairs])
    print(
        f"Dataflow-like: python -m pipeline, {args.processes} SDK worker processes, {len(process_records)} pairs, "
        f"batch {args.batch_size}, {args.precision} (wall time, start and model loads included):"
    )
    runs = {}
    for shared in (False, True):
        runs[shared] = run_processes(
            process_records,
            checkpoint,
            processes=args.processes,
            shared=shared,
            device=str(device),
            precision=args.precision,
            batch_size=args.batch_size,
        )
        memory = f"{runs[shared].peak_gpu_bytes / 2**30:.2f} GiB" if runs[shared].peak_gpu_bytes is not None else "n/a"
        label = "one shared model (--share_model_across_processes)" if shared else "a model per process"
        print(
            f"  {label}: {runs[shared].pairs_per_second:.1f} pairs/s, {runs[shared].model_loads} model load(s), "
            f"peak GPU memory in use {memory}"
        )
    print(f"  shared / per process: {runs[True].pairs_per_second / runs[False].pairs_per_second:.2f}x pairs/s")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
