"""LongCLIPModelHandler: each distinct image stacked once, every pair scored like the original code; the input
sizes come from the header or the settings, a checkpoint that does not fit them is refused, and faults inside
the model are isolated to the records that cause them."""

import logging
import os
import pickle
import shutil

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream

from tests.support.faults import POISON, FaultyHandler, read_calls
from tests.support.reference_longclip import reference_score
from transforms import (
    BatchSettings,
    CheckpointFormatError,
    InferenceFailure,
    LongCLIPModelHandler,
    ModelSettings,
    ScoreLongCLIP,
    ScoreWithEmbeddings,
)
from transforms.beam.handler import _unique_images
from transforms.inputs.prepare import PairPreparer, PreparedPair
from transforms.model.header import InputSizes
from transforms.testing.captions import CAPTIONS


@pytest.mark.slow
def test_handler_stacks_each_distinct_image_once_and_scores_every_pair(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images
):
    copy = tmp_path / "copy_of_rgb.jpg"
    shutil.copy(good_images["rgb.jpg"], copy)
    paths = [good_images["rgb.jpg"], copy, good_images["grey.png"], good_images["rgb.jpg"], good_images["rgb.png"]]
    texts = [CAPTIONS["short"], CAPTIONS["short"], CAPTIONS["long_200_tokens"], CAPTIONS["unicode"], CAPTIONS["short"]]
    preparer = PairPreparer(image_resolution=32, context_length=248)
    handler = LongCLIPModelHandler(ModelSettings(model=str(longclip_checkpoint), device="cpu"))
    batch = []
    for path, text in zip(paths, texts, strict=True):
        image = preparer.load_image({"image_path": str(path)})
        batch.append(PreparedPair(image.pixels, preparer.tokenize_text({"text": text}).ids, None, image.digest))
    stacked, index, digests = _unique_images(batch, pin_memory=False)
    assert stacked.shape[0] == 3 and index == [0, 0, 1, 0, 2]
    assert digests == [batch[0].image_digest, batch[2].image_digest, batch[4].image_digest]  # one per row, in row order
    results = handler.run_inference(batch, handler.load_model())
    for path, text, result in zip(paths, texts, results, strict=True):
        assert abs(result.inference - reference_score(longclip_state_dict, path, text)) < 1e-6


def test_input_sizes_given_are_used_without_opening_the_checkpoint():
    settings = ModelSettings(model="gs://nowhere-bucket/not/there.pt", image_resolution=336, context_length=248)
    assert LongCLIPModelHandler(settings).input_sizes() == InputSizes(336, 248)


def test_a_checkpoint_that_does_not_fit_the_prepared_records_is_refused_on_load(longclip_checkpoint):
    handler = LongCLIPModelHandler(
        ModelSettings(model=str(longclip_checkpoint), image_resolution=224, context_length=248)
    )
    with pytest.raises(CheckpointFormatError, match="takes 32-pixel images and 248-token captions, but the pipeline"):
        handler.load_model()
    read = LongCLIPModelHandler(ModelSettings(model=str(longclip_checkpoint), device="cpu"))
    assert read.input_sizes() == InputSizes(32, 248)
    assert read.load_model().image_resolution == 32


def _pairs(good_images, texts):
    preparer = PairPreparer(image_resolution=32, context_length=248)
    image = preparer.load_image({"image_path": str(good_images["rgb.png"])})
    return [PreparedPair(image.pixels, preparer.tokenize_text({"text": t}).ids, t, image.digest) for t in texts]


@pytest.mark.slow
def test_a_record_the_model_fails_on_is_given_up_alone_and_the_rest_scored(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images
):
    texts = [f"a photo number {i}" for i in range(8)]
    texts[5] = POISON
    handler = FaultyHandler(str(longclip_checkpoint), calls_log=tmp_path / "calls")
    results = handler.run_inference(_pairs(good_images, texts), handler.load_model())
    assert [r.example.context for r in results] == texts
    for text, result in zip(texts, results, strict=True):
        if text == POISON:
            assert isinstance(result.inference, InferenceFailure)
            assert result.inference.message.startswith("RuntimeError: CUDA error: an illegal memory access")
        else:
            want = reference_score(longclip_state_dict, good_images["rgb.png"], text)
            assert abs(result.inference - want) < 1e-6
    # 8 fails; 4 + 4: the good half scores; the bad one splits into 2 + 2, and its bad half into 1 + 1.
    assert read_calls(tmp_path / "calls") == [
        (8, "fault"), (4, "ok"), (4, "fault"), (2, "fault"), (1, "ok"), (1, "fault"), (2, "ok"),
    ]  # fmt: skip


def test_out_of_memory_lowers_the_batch_size_of_later_batches(tmp_path, longclip_checkpoint, good_images):
    handler = FaultyHandler(
        str(longclip_checkpoint), BatchSettings(max_batch_size=8), oom_above=3, calls_log=tmp_path / "calls"
    )
    model = handler.load_model()
    first = handler.run_inference(_pairs(good_images, [f"cat {i}" for i in range(8)]), model)
    assert all(isinstance(result.inference, float) for result in first)
    assert read_calls(tmp_path / "calls") == [(8, "oom"), (4, "oom"), (2, "ok"), (2, "ok"), (2, "ok"), (2, "ok")]
    second = handler.run_inference(_pairs(good_images, [f"dog {i}" for i in range(5)]), model)
    assert all(isinstance(result.inference, float) for result in second)
    assert read_calls(tmp_path / "calls")[6:] == [(2, "ok"), (2, "ok"), (1, "ok")], "no batch runs out again"


def test_embeddings_come_when_asked_for_as_an_inference_arg(longclip_checkpoint, good_images):
    preparer = PairPreparer(image_resolution=32, context_length=248)
    handler = LongCLIPModelHandler(ModelSettings(model=str(longclip_checkpoint), device="cpu"))
    image = preparer.load_image({"image_path": str(good_images["rgb.png"])})
    batch = [PreparedPair(image.pixels, preparer.tokenize_text({"text": "a cat"}).ids, None, image.digest)]
    model = handler.load_model()
    (plain,) = handler.run_inference(batch, model)
    (embedded,) = handler.run_inference(batch, model, {"embeddings": True})
    assert isinstance(embedded.inference, ScoreWithEmbeddings) and embedded.inference.score == plain.inference
    assert len(embedded.inference.image_embedding) == len(embedded.inference.text_embedding) == 32
    handler.validate_inference_args({"embeddings": True})
    with pytest.raises(ValueError, match="only the inference_arg 'embeddings', got \\['temperature'\\]"):
        handler.validate_inference_args({"temperature": 1.0})


@pytest.mark.slow
def test_one_model_per_process_across_the_bundles_of_the_local_streaming_runner(
    tmp_path, longclip_checkpoint, good_images, caplog
):
    """Beam's local streaming runner makes a RunInference DoFn per bundle and tears it down after; the model
    must still be loaded once (it was loaded for each bundle: a 1.7 GB LongCLIP-L each time)."""
    checkpoint = tmp_path / "own.pt"  # a checkpoint no other test has loaded in this process
    shutil.copy(longclip_checkpoint, checkpoint)
    stream = test_stream.TestStream()
    for n in range(4):  # each its own bundle
        stream = stream.add_elements([{"n": n, "image_path": str(good_images["rgb.png"]), "text": "a cat"}])
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with caplog.at_level(logging.INFO, logger="transforms"):
        with beam.Pipeline(options=options) as pipeline:
            scored = pipeline | stream.advance_watermark_to_infinity() | ScoreLongCLIP(str(checkpoint))
            scored | beam.Map(lambda record, out=str(tmp_path / "scored"): open(out, "a").write(f"{record['n']}\n"))
    assert sorted((tmp_path / "scored").read_text().split()) == ["0", "1", "2", "3"]
    loads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Loaded LongCLIP checkpoint")]
    assert len(loads) == 1, loads


def test_the_model_is_loaded_again_only_when_its_checkpoint_or_settings_change_and_the_log_says_why(
    tmp_path, longclip_checkpoint, caplog
):
    checkpoint = tmp_path / "own.pt"
    shutil.copy(longclip_checkpoint, checkpoint)
    handler = LongCLIPModelHandler(ModelSettings(model=str(checkpoint), device="cpu"))
    with caplog.at_level(logging.INFO, logger="transforms"):
        first = handler.load_model()
        caplog.clear()  # what came before: the model another test left in this process
        assert pickle.loads(pickle.dumps(handler)).load_model() is first  # another DoFn's copy of the handler
        bf16 = LongCLIPModelHandler(ModelSettings(model=str(checkpoint), device="cpu", precision="bf16")).load_model()
        os.utime(checkpoint, ns=(0, 0))
        again = handler.load_model()
    assert bf16 is not first and again is not bf16
    messages = [r.getMessage() for r in caplog.records if "LongCLIP" in r.getMessage()]
    assert sum(m.startswith("Loaded LongCLIP checkpoint") for m in messages) == 2, messages
    assert [m for m in messages if m.startswith("Loading LongCLIP again")] == [
        "Loading LongCLIP again in this process: precision is now bf16 (was fp32); the one before goes",
        f"Loading LongCLIP again in this process: {checkpoint} changed on disk; the one before goes",
    ]


def test_release_model_lets_the_process_model_go_and_the_next_batch_loads_a_fresh_one(longclip_checkpoint):
    """What a benchmark run (or a notebook short of memory) needs: no model, and no image features, kept."""
    from transforms.beam.handler import release_model

    handler = LongCLIPModelHandler(ModelSettings(model=str(longclip_checkpoint), device="cpu"))
    first = handler.load_model()
    assert handler.load_model() is first
    release_model()
    assert handler.load_model() is not first
