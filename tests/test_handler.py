"""LongCLIPModelHandler: each distinct image stacked once, every pair scored like the original code."""

import shutil

import pytest

from tests.support.captions import CAPTIONS
from tests.support.reference_longclip import reference_score
from transforms import LongCLIPModelHandler, ModelSettings, PairPreparer, PreparedPair, ScoreWithEmbeddings
from transforms.beam.handler import _unique_images


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
