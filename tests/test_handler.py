"""LongCLIPModelHandler: each distinct image stacked once, every pair scored like the original code; the input
sizes come from the header or the settings, and a checkpoint that does not fit them is refused."""

import shutil

import pytest

from tests.support.captions import CAPTIONS
from tests.support.reference_longclip import reference_score
from transforms import (
    CheckpointFormatError,
    InputSizes,
    LongCLIPModelHandler,
    ModelSettings,
    PairPreparer,
    PreparedPair,
)
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
