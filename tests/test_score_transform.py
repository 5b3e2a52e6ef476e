"""ScoreLongCLIP in real Beam pipelines: exact scores, every record once, failures with reasons."""

import json
import math

import apache_beam as beam
import torch
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from reference_longclip import reference_score
from test_model import CAPTIONS

from transforms import ScoreLongCLIP
from transforms.inputs import reasons as errors

BAD_IMAGE_REASONS = {
    "corrupt.jpg": errors.IMAGE_UNDECODABLE,
    "truncated.jpg": errors.IMAGE_UNDECODABLE,
    "empty.png": errors.IMAGE_UNDECODABLE,
    "text_as.png": errors.IMAGE_UNDECODABLE,
    "a_directory.jpg": errors.IMAGE_UNREADABLE,
    "bomb.png": errors.IMAGE_TOO_LARGE,
}


def _run(records, transform, folder):
    """Runs `records | transform` on the FnApiRunner and reads back what it wrote: (outputs, result)."""
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    (
        pipeline
        | beam.Create(records, reshuffle=False)
        | transform
        | beam.Map(json.dumps)
        | beam.io.WriteToText(str(folder / "out"), shard_name_template="")
    )
    result = pipeline.run()
    result.wait_until_finish()
    return [json.loads(line) for line in (folder / "out").read_text().splitlines()], result


def _corpus(good_images, bad_images):
    records = []
    for name in sorted(good_images):
        for caption in sorted(CAPTIONS):
            records.append(
                {"id": len(records), "image_path": name, "text": CAPTIONS[caption], "extra": [1, {"k": name}]}
            )
    for name in sorted(bad_images):
        records.append({"id": len(records), "image_path": str(bad_images[name]), "text": "a cat"})
    records += [
        {"id": len(records), "image_path": "rgb.png", "text": ""},
        {"id": len(records) + 1, "image_path": "rgb.png"},
        {"id": len(records) + 2, "image_path": "no_such.png", "text": "a cat"},
        {"id": len(records) + 3, "text": "no image field"},
    ]
    return records


def test_every_record_once_with_exact_scores_or_a_reason(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images, bad_images
):
    records = _corpus(good_images, bad_images)
    image_root = str(next(iter(good_images.values())).parent)
    outputs, result = _run(
        records, ScoreLongCLIP(str(longclip_checkpoint), image_root=image_root, max_batch_size=8), tmp_path
    )

    assert sorted(o["id"] for o in outputs) == [r["id"] for r in records]
    by_id = {o["id"]: o for o in outputs}
    worst = 0.0
    for record in records:
        out = by_id[record["id"]]
        assert {k: out[k] for k in record} == record, "input fields must come out untouched"
        name = record.get("image_path")
        if name in good_images and record.get("text"):
            expected = reference_score(longclip_state_dict, good_images[name], record["text"])
            worst = max(worst, abs(out["longclip_score"] - expected))
            assert out["longclip_score_error"] is None
            assert out["longclip_score_truncated"] == (record["text"] == CAPTIONS["over_248_tokens"])
        else:
            assert out["longclip_score"] == 0.0 and out["longclip_score_error"]
    assert worst < 1e-6, f"max |score - original LongCLIP| = {worst}"

    reasons = {
        r["id"]: by_id[r["id"]]["longclip_score_error"].split(":")[0]
        for r in records
        if by_id[r["id"]]["longclip_score_error"]
    }
    for name, code in BAD_IMAGE_REASONS.items():
        rid = next(r["id"] for r in records if r.get("image_path") == str(bad_images[name]))
        assert reasons[rid] == code, name
    assert sorted(reasons.values()).count(errors.TEXT_EMPTY) == 1
    assert sorted(reasons.values()).count(errors.TEXT_MISSING) == 1
    assert sorted(reasons.values()).count(errors.IMAGE_NOT_FOUND) == 1
    assert sorted(reasons.values()).count(errors.IMAGE_MISSING) == 1

    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("ScoreLongCLIP"))["counters"]
    }
    assert counters["scored"] + counters["failed"] == len(records)
    assert counters["failed"] == len(reasons)
    assert counters["failed_image_undecodable"] == 4
    assert counters["truncated"] == len(good_images)


def test_custom_keys_leave_other_fields_alone(tmp_path, longclip_checkpoint, good_images):
    records = [{"img": str(good_images["rgb.jpg"]), "caption": "a photo", "score": "kept"}]
    outputs, _ = _run(
        records, ScoreLongCLIP(str(longclip_checkpoint), image_key="img", text_key="caption", output_key="s"), tmp_path
    )
    (out,) = outputs
    assert out["score"] == "kept" and out["s_error"] is None and out["s_truncated"] is False
    assert 0.0 <= out["s"] <= 1.0 and not math.isnan(out["s"])


def test_records_keep_their_event_time_and_window(tmp_path, longclip_checkpoint, good_images):
    """Beam's batching stamps batches with the end of the window; scored records must not inherit that,
    or a stream's fixed windows downstream would never close."""
    records = [{"id": n, "image_path": str(good_images["rgb.png"]), "text": "a cat" if n % 3 else ""} for n in range(6)]
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    (
        pipeline
        | beam.Create(records, reshuffle=False)
        | "Stamp" >> beam.Map(lambda record: beam.window.TimestampedValue(record, 1000 + 10 * record["id"]))
        | "Window" >> beam.WindowInto(beam.window.FixedWindows(15))
        | ScoreLongCLIP(str(longclip_checkpoint), max_batch_size=4)
        | beam.Map(
            lambda r, t=beam.DoFn.TimestampParam, w=beam.DoFn.WindowParam: json.dumps(
                [r["id"], float(t), float(w.start), r["longclip_score_error"] is None]
            )
        )
        | beam.io.WriteToText(str(tmp_path / "out"), shard_name_template="")
    )
    pipeline.run().wait_until_finish()
    seen = sorted(json.loads(line) for line in (tmp_path / "out").read_text().splitlines())
    assert seen == [[n, 1000.0 + 10 * n, 1000.0 + 10 * n - (1000 + 10 * n) % 15, bool(n % 3)] for n in range(6)]


def test_a_score_that_is_not_a_number_is_a_failure_with_a_reason(tmp_path, longclip_state_dict, good_images):
    """A model that overflows (fp16) gives NaN; the record must get 0.0 and a reason, not NaN."""
    broken = {name: tensor.clone() for name, tensor in longclip_state_dict.items()}
    broken["text_projection"][0, 0] = float("nan")
    torch.save(broken, tmp_path / "nan.pt")
    records = [{"id": 1, "image_path": str(good_images["rgb.png"]), "text": "a cat"}]
    (out,), result = _run(records, ScoreLongCLIP(str(tmp_path / "nan.pt")), tmp_path)
    assert out["longclip_score"] == 0.0
    assert out["longclip_score_error"].startswith("score_not_finite: the model gave nan")
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter())["counters"]}
    assert counters["failed_score_not_finite"] == 1 and "scored" not in counters
