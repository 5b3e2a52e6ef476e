"""Images and captions shared by several records are read and encoded once, with unchanged scores."""

import json
import shutil

import apache_beam as beam
import pytest
import torch
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import window
from reference_longclip import reference_score
from test_model import CAPTIONS

from transforms import LongCLIPModelHandler, ScoreLongCLIP
from transforms.beam.handler import _unique_images
from transforms.inputs.prepare import PairPreparer, PreparedPair


def test_same_bytes_share_a_key_and_a_recent_location_is_loaded_once(tmp_path, good_images):
    copy = tmp_path / "copy_of_rgb.jpg"
    shutil.copy(good_images["rgb.jpg"], copy)
    preparer = PairPreparer(image_resolution=32, context_length=248)
    first = preparer.load_keyed_image({"image_path": str(good_images["rgb.jpg"])})
    again = preparer.load_keyed_image({"image_path": str(good_images["rgb.jpg"])})
    same_bytes = preparer.load_keyed_image({"image_path": str(copy)})
    other = preparer.load_keyed_image({"image_path": str(good_images["rgb.png"])})
    assert again.pixels is first.pixels, "a recent location must not be read and decoded again"
    assert same_bytes.key == first.key and same_bytes.pixels is not first.pixels
    assert torch.equal(same_bytes.pixels, first.pixels)
    assert other.key != first.key


def test_handler_stacks_each_distinct_image_once_and_scores_every_pair(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images
):
    copy = tmp_path / "copy_of_rgb.jpg"
    shutil.copy(good_images["rgb.jpg"], copy)
    paths = [good_images["rgb.jpg"], copy, good_images["grey.png"], good_images["rgb.jpg"], good_images["rgb.png"]]
    texts = [CAPTIONS["short"], CAPTIONS["short"], CAPTIONS["long_200_tokens"], CAPTIONS["unicode"], CAPTIONS["short"]]
    preparer = PairPreparer(image_resolution=32, context_length=248)
    handler = LongCLIPModelHandler(str(longclip_checkpoint), device="cpu")
    batch = []
    for path, text in zip(paths, texts, strict=True):
        image = preparer.load_keyed_image({"image_path": str(path)})
        batch.append(PreparedPair(image.pixels, preparer.tokenize_text({"text": text}).ids, None, image.key))
    stacked, index, keys = _unique_images(batch, pin_memory=False)
    assert stacked.shape[0] == 3 and index == [0, 0, 1, 0, 2]
    assert keys == [batch[0].image_key, batch[2].image_key, batch[4].image_key]  # one per row, in row order
    results = handler.run_inference(batch, handler.load_model())
    for path, text, result in zip(paths, texts, results, strict=True):
        assert abs(result.inference - reference_score(longclip_state_dict, path, text)) < 1e-6


class _WindowStart(beam.DoFn):
    def process(self, record, win=beam.DoFn.WindowParam):
        yield {**record, "window_start": int(win.start)}


def test_coco_style_records_in_windows_come_out_once_in_their_own_window(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images
):
    captions = [CAPTIONS[name] for name in sorted(CAPTIONS)][:5]
    names = ["rgb.jpg", "rgb.png", "grey.png", "missing.png", "cmyk.jpg", "rgb.png"]
    records = [
        {"id": i * 5 + j, "image_path": name, "text": captions[j], "t": i * 5 + j}
        for i, name in enumerate(names)
        for j in range(5)
    ]
    image_root = str(good_images["rgb.jpg"].parent)
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    (
        pipeline
        | beam.Create(records, reshuffle=False)
        | beam.Map(lambda r: window.TimestampedValue(r, r["t"]))
        | beam.WindowInto(window.FixedWindows(10))
        | ScoreLongCLIP(str(longclip_checkpoint), image_root=image_root, max_batch_size=7, prepare_threads=3)
        | beam.ParDo(_WindowStart())
        | beam.Map(json.dumps)
        | beam.io.WriteToText(str(tmp_path / "out"), shard_name_template="")
    )
    pipeline.run().wait_until_finish()
    outputs = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]

    assert sorted(o["id"] for o in outputs) == [r["id"] for r in records]
    for out in outputs:
        assert out["window_start"] == out["t"] // 10 * 10, "each record must stay in its own window"
        if out["image_path"] == "missing.png":
            assert out["longclip_score"] == 0.0 and out["longclip_score_error"].startswith("image_not_found")
        else:
            want = reference_score(longclip_state_dict, good_images[out["image_path"]], out["text"])
            assert abs(out["longclip_score"] - want) < 1e-6


def test_prepare_threads_must_be_positive(longclip_checkpoint):
    with pytest.raises(ValueError, match="prepare_threads"):
        ScoreLongCLIP(str(longclip_checkpoint), prepare_threads=0)
