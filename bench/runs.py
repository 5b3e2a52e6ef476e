"""The measured runs: ScoreLongCLIP in a real Beam pipeline, and the bare model loop it is held to."""

from __future__ import annotations

import itertools
import time
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
import torch
from apache_beam.options.pipeline_options import PipelineOptions

from transforms import BatchSettings, ImageSettings, ModelSettings, RecordFields, ScoreLongCLIP
from transforms.beam.handler import release_model
from transforms.inputs.images import ImagePreprocessor, decode_image
from transforms.inputs.tokenizer import LongCLIPTokenizer
from transforms.model.scorer import LongCLIPScorer

# The FnApiRunner runs the DoFns in this process, so they can note times and outputs here.
_SEEN: dict[tuple[int, str], list] = {}
_RUN_IDS = itertools.count()


class _Note(beam.DoFn):
    def __init__(self, run: int, what: str):
        self._key = (run, what)

    def process(self, element):
        _SEEN.setdefault(self._key, []).append((time.perf_counter(), time.process_time(), element))
        yield element


def run_pipeline(
    records: Sequence[dict],
    checkpoint: str,
    *,
    batch_size: int,
    device: str = "cpu",
    precision: str = "fp32",
    prepare_threads: int = 4,
) -> tuple[float, float, list[float]]:
    """Scores `records` with ScoreLongCLIP on the FnApiRunner, batches of exactly `batch_size`.

    Returns (steady seconds, wall seconds, scores by record id). Steady time runs from the first
    record entering ScoreLongCLIP to the last one leaving it, so it leaves out the pipeline's start
    and the model load (done once per worker, before the first record); wall time includes them.
    """
    run = measure_pipeline(
        records,
        checkpoint,
        batch_size=batch_size,
        device=device,
        precision=precision,
        prepare_threads=prepare_threads,
    )
    return run.steady, run.wall, run.scores


class PipelineRun(NamedTuple):
    steady: float  # seconds from the first record into ScoreLongCLIP to the last one out
    wall: float  # seconds of the whole pipeline, start and model load included
    cpu: float  # CPU seconds of this process, all threads, over the steady span: work, whatever else runs
    scores: list[float]  # in the order of the records


def measure_pipeline(
    records: Sequence[dict],
    checkpoint: str,
    *,
    batch_size: int,
    device: str = "cpu",
    precision: str = "fp32",
    prepare_threads: int = 4,
    source: Optional[beam.PTransform] = None,
    fields: Optional[RecordFields] = None,
) -> PipelineRun:
    """`run_pipeline`, with the CPU time beside the wall time: on a shared machine the steady wall time
    moves with other processes' load, the CPU time much less.

    `source`, when given, reads the same records from files (a job reader returning `.records`) instead
    of `beam.Create`: its per-record work is then part of the steady span.
    """
    run = next(_RUN_IDS)
    release_model()  # each run loads its model, as a worker does: no image features kept from an earlier run
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        if source is None:
            read = pipeline | beam.Create(records, reshuffle=False)
        else:
            read = (pipeline | source).records
        (
            read
            | "In" >> beam.ParDo(_Note(run, "in"))
            | ScoreLongCLIP(
                ModelSettings(model=checkpoint, device=device, precision=precision),
                batching=BatchSettings(min_batch_size=batch_size, max_batch_size=batch_size),
                fields=fields or RecordFields(),
                images=ImageSettings(prepare_threads=prepare_threads),
            )
            | "Out" >> beam.ParDo(_Note(run, "out"))
        )
    wall = time.perf_counter() - start
    seen_in, seen_out = _SEEN.pop((run, "in")), _SEEN.pop((run, "out"))
    errors = [out for _, _, out in seen_out if out["longclip_score_error"]]
    if errors or len(seen_out) != len(records):
        raise RuntimeError(f"{len(seen_out)} of {len(records)} records out, errors: {errors[:3]}")
    steady = max(t for t, _, _ in seen_out) - min(t for t, _, _ in seen_in)
    cpu = max(c for _, c, _ in seen_out) - min(c for _, c, _ in seen_in)
    by_id = {out["id"]: out["longclip_score"] for _, _, out in seen_out}
    return PipelineRun(steady, wall, cpu, [by_id[record["id"]] for record in records])


class PreDecoded:
    """The records' images decoded and preprocessed to uint8, and their captions tokenized, up front."""

    def __init__(self, records: Sequence[dict], resolution: int, context_length: int):
        preprocess = ImagePreprocessor(resolution)
        tokenizer = LongCLIPTokenizer(context_length)
        self.pixels: dict[str, torch.Tensor] = {}
        for record in records:
            path = record["image_path"]
            if path not in self.pixels:
                with open(path, "rb") as stream:
                    self.pixels[path] = preprocess(decode_image(stream.read()))
        self.paths = [record["image_path"] for record in records]
        self.token_ids = [tokenizer(record["text"]).ids for record in records]


def bare_loop(scorer: LongCLIPScorer, data: PreDecoded, batch_size: int, pin_memory: bool = False) -> list[float]:
    """The model alone over pre-decoded tensors: what the pipeline would reach with zero overhead.

    Same batches, the same image sharing within and across batches as the pipeline, so the same model work.
    """
    run = next(_RUN_IDS)  # fresh keys: features kept from an earlier run must not count
    scores: list[float] = []
    for start in range(0, len(data.paths), batch_size):
        paths = data.paths[start : start + batch_size]
        rows: dict[str, int] = {}
        index = [rows.setdefault(path, len(rows)) for path in paths]
        unique = [data.pixels[path] for path in rows]
        images = torch.stack(unique)
        if pin_memory:
            images = images.pin_memory()
        keys = [f"{run}:{path}" for path in rows]
        scores += scorer.score(images, data.token_ids[start : start + batch_size], index, keys)
    return scores


def timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result
