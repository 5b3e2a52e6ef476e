"""ScoreLongCLIP in real Beam pipelines: exact scores, every record once, failures with reasons."""

import itertools
import json
import math
import shutil
import sys
import time
import traceback

import apache_beam as beam
import pytest
import torch
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import window
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.reference_longclip import reference_score
from transforms import (
    BatchSettings,
    ImageSettings,
    InvalidSetting,
    LongCLIPModelHandler,
    ModelSettings,
    RecordFields,
    ScoreLongCLIP,
    reasons,
)
from transforms.testing.captions import CAPTIONS
from transforms.testing.images import BAD_IMAGE_REASONS


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


@pytest.mark.slow
def test_every_record_once_with_exact_scores_or_a_reason(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images, bad_images
):
    records = _corpus(good_images, bad_images)
    image_root = str(next(iter(good_images.values())).parent)
    score = ScoreLongCLIP(
        str(longclip_checkpoint), batching=BatchSettings(max_batch_size=8), images=ImageSettings(image_root=image_root)
    )
    outputs, result = _run(records, score, tmp_path)

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
            assert out["longclip_score_error"] is None and out["longclip_score_reason"] is None
            assert out["longclip_score_truncated"] == (record["text"] == CAPTIONS["over_248_tokens"])
        else:
            assert out["longclip_score"] == 0.0 and out["longclip_score_reason"] in reasons.REASON_CODES
            assert out["longclip_score_error"].startswith(out["longclip_score_reason"] + ": ")
    assert worst < 1e-6, f"max |score - original LongCLIP| = {worst}"

    found = {
        r["id"]: by_id[r["id"]]["longclip_score_reason"] for r in records if by_id[r["id"]]["longclip_score_reason"]
    }
    for name, code in BAD_IMAGE_REASONS.items():
        rid = next(r["id"] for r in records if r.get("image_path") == str(bad_images[name]))
        assert found[rid] == code, name
    assert sorted(found.values()).count(reasons.TEXT_EMPTY) == 1
    assert sorted(found.values()).count(reasons.TEXT_MISSING) == 1
    assert sorted(found.values()).count(reasons.IMAGE_NOT_FOUND) == 1
    assert sorted(found.values()).count(reasons.IMAGE_MISSING) == 1

    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("ScoreLongCLIP"))["counters"]
    }
    assert counters["scored"] + counters["failed"] == len(records)
    assert counters["failed"] == len(found)
    assert counters["failed_image_undecodable"] == 4
    assert counters["truncated"] == len(good_images)


def test_custom_keys_leave_other_fields_alone(tmp_path, longclip_checkpoint, good_images):
    records = [{"img": str(good_images["rgb.jpg"]), "caption": "a photo", "score": "kept"}]
    fields = RecordFields(image_key="img", text_key="caption", output_key="s")
    outputs, _ = _run(records, ScoreLongCLIP(str(longclip_checkpoint), fields=fields), tmp_path)
    (out,) = outputs
    assert out["score"] == "kept" and out["s_error"] is None and out["s_reason"] is None and out["s_truncated"] is False
    assert set(out) == {"img", "caption", "score", "s", "s_error", "s_reason", "s_truncated"}, "no embeddings unasked"
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
        | ScoreLongCLIP(str(longclip_checkpoint), batching=BatchSettings(max_batch_size=4))
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
    assert out["longclip_score_reason"] == "score_not_finite"
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(MetricsFilter())["counters"]}
    assert counters["failed_score_not_finite"] == 1 and "scored" not in counters


class _WindowStart(beam.DoFn):
    def process(self, record, win=beam.DoFn.WindowParam):
        yield {**record, "window_start": int(win.start)}


@pytest.mark.slow
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
        | ScoreLongCLIP(
            str(longclip_checkpoint),
            batching=BatchSettings(max_batch_size=7),
            images=ImageSettings(image_root=image_root, prepare_threads=3),
        )
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


def _ids(pcoll_records):
    return sorted(record["id"] for record in pcoll_records)


def test_scored_and_failed_come_apart_and_two_steps_keep_their_own_counters(
    tmp_path, longclip_checkpoint, openai_checkpoint, good_images
):
    """`.with_exception_handling()` gives (scored, failed) like RunInference; each step has its own counters."""
    records = [
        {"id": 0, "image_path": str(good_images["rgb.png"]), "text": "a cat"},
        {"id": 1, "image_path": str(good_images["grey.png"]), "text": ""},
        {"id": 2, "image_path": "/no/such/file.png", "text": "a cat"},
        {"id": 3, "image_path": str(good_images["rgb.jpg"]), "text": "a dog"},
    ]
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    inputs = pipeline | beam.Create(records, reshuffle=False)
    scored, failed = inputs | "Long" >> ScoreLongCLIP(str(longclip_checkpoint)).with_exception_handling()
    other = inputs | "OpenAI" >> ScoreLongCLIP(str(openai_checkpoint), fields=RecordFields(output_key="clip"))
    for name, pcoll in (("scored", scored), ("failed", failed), ("other", other)):
        _ = (
            pcoll
            | f"Json{name}" >> beam.Map(json.dumps)
            | f"Write{name}" >> beam.io.WriteToText(str(tmp_path / name), shard_name_template="")
        )
    result = pipeline.run()
    result.wait_until_finish()
    read = {
        name: [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
        for name in ("scored", "failed", "other")
    }
    assert _ids(read["scored"]) == [0, 3] and all(r["longclip_score_reason"] is None for r in read["scored"])
    assert {r["id"]: r["longclip_score_reason"] for r in read["failed"]} == {1: "text_empty", 2: "image_not_found"}
    assert all(r["longclip_score"] == 0.0 for r in read["failed"])
    assert _ids(read["other"]) == [0, 1, 2, 3] and "longclip_score" not in read["other"][0]

    def counters(namespace):
        found = result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]
        return {c.key.metric.name: c.committed for c in found}

    assert counters("Long") == {"scored": 2, "failed": 2, "failed_text_empty": 1, "failed_image_not_found": 1}
    assert counters("OpenAI") == {"scored": 2, "failed": 2, "failed_text_empty": 1, "failed_image_not_found": 1}
    inference = result.metrics().query(MetricsFilter().with_namespace("Long.inference"))["counters"]
    assert sum(c.committed for c in inference if c.key.metric.name == "num_inferences") == 2


def test_scored_and_failed_in_a_stream(tmp_path, longclip_checkpoint, good_images):
    """The same split on Beam's streaming runner, records arriving over time (TestStream)."""
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.testing.test_stream import TestStream

    good = {"id": 0, "image_path": str(good_images["rgb.png"]), "text": "a cat"}
    bad = {"id": 1, "image_path": str(good_images["rgb.png"]), "text": 7}
    later = {"id": 2, "image_path": str(good_images["la.png"]), "text": "a bird"}
    stream = (
        TestStream()
        .add_elements([good, bad])
        .advance_processing_time(5)
        .advance_watermark_to(10)
        .add_elements([later])
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(["--runner=BundleBasedDirectRunner"])
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    scored, failed = pipeline | stream | ScoreLongCLIP(str(longclip_checkpoint)).with_exception_handling()
    for name, pcoll in (("scored", scored), ("failed", failed)):
        _ = (
            pcoll
            | f"Json{name}" >> beam.Map(lambda r: str(r["id"]) + ":" + str(r["longclip_score_reason"]))
            | (f"Collect{name}" >> beam.Map(lambda line, path=str(tmp_path / name): open(path, "a").write(line + "\n")))
        )
    pipeline.run().wait_until_finish()
    assert sorted((tmp_path / "scored").read_text().split()) == ["0:None", "2:None"]
    assert (tmp_path / "failed").read_text().split() == ["1:text_wrong_type"]


def test_a_ready_handler_and_beams_model_refresh(tmp_path, longclip_checkpoint, good_images):
    """A caller's own handler is used as given; a ModelMetadata side input swaps the checkpoint it loads."""
    from apache_beam.ml.inference.base import ModelMetadata

    from tests.support.reference_longclip import reference_score
    from transforms.testing.checkpoints import save_checkpoint

    other = save_checkpoint(tmp_path / "other.pt", seed=5)
    handler = LongCLIPModelHandler(ModelSettings(model=str(longclip_checkpoint)), BatchSettings(max_batch_size=2))
    with pytest.raises(ValueError, match="pass batching to the LongCLIPModelHandler"):
        ScoreLongCLIP(handler, batching=BatchSettings())
    records = [{"id": 0, "image_path": str(good_images["rgb.png"]), "text": "a cat"}]
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    refresh = pipeline | "Model" >> beam.Create([ModelMetadata(model_id=str(other), model_name="other")])
    (
        pipeline
        | beam.Create(records)
        | ScoreLongCLIP(handler, model_metadata_pcoll=refresh)
        | beam.Map(json.dumps)
        | beam.io.WriteToText(str(tmp_path / "out"), shard_name_template="")
    )
    pipeline.run().wait_until_finish()
    (out,) = [json.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    want = reference_score(torch.load(other, weights_only=True), good_images["rgb.png"], "a cat")
    assert abs(out["longclip_score"] - want) < 1e-6


def test_settings_are_checked_when_the_transform_is_made(longclip_checkpoint):
    with pytest.raises(InvalidSetting, match="prepare_threads: must be at least 1"):
        ScoreLongCLIP(str(longclip_checkpoint), images=ImageSettings(prepare_threads=0))
    with pytest.raises(InvalidSetting, match="device: 'gpu' is not a torch device"):
        ScoreLongCLIP(ModelSettings(model=str(longclip_checkpoint), device="gpu"))
    with pytest.raises(InvalidSetting, match=r"max_batch_size: must be at least min_batch_size \(8\)"):
        ScoreLongCLIP(str(longclip_checkpoint), batching=BatchSettings(min_batch_size=8, max_batch_size=4))


_WATCHED_PATHS: set = set()
_OPENS_OF_WATCHED: list = []


def _record_opens(event, args):
    """An audit hook (Python's own record of every `open`): which call stacks open a watched file."""
    if event == "open" and _WATCHED_PATHS and args and str(args[0]) in _WATCHED_PATHS:
        _OPENS_OF_WATCHED.append([frame.name for frame in traceback.extract_stack()])


def test_workers_open_the_checkpoint_only_to_load_the_model(tmp_path, longclip_checkpoint, good_images):
    """Building the pipeline reads the checkpoint's header here; running it (all DoFns run in this process on
    the FnApiRunner) opens the file in the model handler's `load_model` and nowhere else."""
    checkpoint = tmp_path / "watched.pt"
    shutil.copy(longclip_checkpoint, checkpoint)
    records = [{"image_path": str(good_images[name]), "text": "a house"} for name in ("rgb.png", "grey.png")]
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    scored = pipeline | beam.Create(records) | ScoreLongCLIP(str(checkpoint))
    scored | beam.Map(json.dumps) | beam.io.WriteToText(str(tmp_path / "out"), shard_name_template="")
    if _record_opens not in _AUDIT_HOOKS:  # audit hooks stay for the process's life: add it once
        sys.addaudithook(_record_opens)
        _AUDIT_HOOKS.append(_record_opens)
    _WATCHED_PATHS.add(str(checkpoint))
    try:
        pipeline.run().wait_until_finish()
    finally:
        _WATCHED_PATHS.clear()
    opens, _OPENS_OF_WATCHED[:] = list(_OPENS_OF_WATCHED), []
    assert len((tmp_path / "out").read_text().splitlines()) == 2
    assert opens, "the model must have been loaded from the file"
    for stack in opens:
        assert "load_model" in stack, stack


_AUDIT_HOOKS: list = []


@pytest.mark.slow
def test_stalled_reads_hold_back_no_record_past_its_deadline(image_server, silent_server):
    """The prepare step, record by record: 22 reads that never end among 10 good ones, 10 records in flight.

    Records leave in input order, so each must leave within the deadline of the moment it was handed in,
    however many stalled reads came before it (in threads, in the queue, or as the head of the line)."""
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.timestamp import Timestamp
    from apache_beam.utils.windowed_value import PANE_INFO_UNKNOWN

    from transforms.beam.score import _PrepareDoFn
    from transforms.model.header import InputSizes

    deadline = 1.5
    stalls = [f"{image_server.url}/stall-headers", f"{image_server.url}/hang", f"{silent_server.url}/a.png"]
    records = []
    for index in range(32):  # runs of 1 to 4 stalled reads between good ones
        stalled = index % 5 != 4 and index % 7 != 6
        location = stalls[index % 3] if stalled else f"{image_server.url}/img/rgb.png?{index}"
        records.append({"id": index, "image_path": location, "text": "a cat"})
    prepare = _PrepareDoFn(
        InputSizes(image_resolution=32, context_length=248),
        RecordFields(),
        ImageSettings(http_timeout_secs=deadline, prepare_threads=2),
        max_batch_size=8,
    )
    prepare.setup()
    prepare.start_bundle()
    handed_in, left = {}, {}
    started = time.monotonic()

    def note(outputs):
        for output in outputs:
            value = output.value if isinstance(output, beam.pvalue.TaggedOutput) else output
            result = value.value
            record = result.record if hasattr(result, "record") else result.context.record
            left[record["id"]] = time.monotonic()

    for record in records:
        handed_in[record["id"]] = time.monotonic()
        note(prepare.process(record, Timestamp(0), GlobalWindow(), PANE_INFO_UNKNOWN))
    note(prepare.finish_bundle())
    total = time.monotonic() - started
    prepare.teardown()
    delays = {index: left[index] - handed_in[index] for index in handed_in}
    assert sorted(left) == list(range(32)), "every record leaves once"
    assert max(delays.values()) < deadline + 1, sorted(delays.items(), key=lambda item: -item[1])[:5]
    assert total < 3 * deadline + 1, f"{total:.1f} s for 32 records: stalled reads were waited for in turn"


def _write_lines(name: str, folder):
    path = str(folder / name)
    return beam.Map(lambda line: open(path, "a", encoding="utf-8").write(line + "\n"))


@pytest.mark.slow
def test_records_the_model_fails_on_leave_on_failed_and_the_rest_is_scored(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images
):
    """An exception inside the model fails only the records that cause it (a handler whose model raises on a
    caption, and runs out of memory on batches over 3); before, it failed the bundle and so the job."""
    from tests.support.faults import POISON, FaultyHandler, read_calls

    records = [
        {"id": n, "image_path": str(good_images["rgb.png"]), "text": POISON if n in (3, 9) else f"a cat, {n}"}
        for n in range(12)
    ]
    batching = BatchSettings(min_batch_size=8, max_batch_size=8)
    handler = FaultyHandler(str(longclip_checkpoint), batching, oom_above=3, calls_log=tmp_path / "calls")
    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"]))
    scored, failed = pipeline | beam.Create(records, reshuffle=False) | ScoreLongCLIP(handler).with_exception_handling()
    scored | "JsonScored" >> beam.Map(json.dumps) | "Scored" >> _write_lines("scored", tmp_path)
    failed | "JsonFailed" >> beam.Map(json.dumps) | "Failed" >> _write_lines("failed", tmp_path)
    result = pipeline.run()
    result.wait_until_finish()

    scored = [json.loads(line) for line in (tmp_path / "scored").read_text().splitlines()]
    failed = [json.loads(line) for line in (tmp_path / "failed").read_text().splitlines()]
    assert _ids(scored) == [n for n in range(12) if n not in (3, 9)]
    for record in scored:
        want = reference_score(longclip_state_dict, good_images["rgb.png"], record["text"])
        assert abs(record["longclip_score"] - want) < 1e-6
    assert _ids(failed) == [3, 9]
    for record in failed:
        assert record["longclip_score"] == 0.0 and record["longclip_score_reason"] == "inference_failed"
        assert record["longclip_score_error"] == (
            "inference_failed: the model failed on this record alone: "
            "RuntimeError: CUDA error: an illegal memory access was encountered (injected)"
        )
    sizes = [size for size, _ in read_calls(tmp_path / "calls")]
    assert sizes[0] == 8 and max(sizes[sizes.index(2) :]) <= 2, "after running out of memory, batches stay small"
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("ScoreLongCLIP"))["counters"]
    }
    assert counters == {"scored": 10, "failed": 2, "failed_inference_failed": 2}


def test_a_stream_goes_on_past_a_record_the_model_always_fails_on(tmp_path, longclip_checkpoint, good_images):
    """Streaming (TestStream, batches of one): the failing record leaves on `failed` once, the ones after it
    are scored; before, the stream retried its batch until the runner gave up."""
    from apache_beam.options.pipeline_options import StandardOptions
    from apache_beam.testing.test_stream import TestStream

    from tests.support.faults import POISON, FaultyHandler

    image = str(good_images["rgb.png"])
    stream = TestStream()
    for n in range(4):
        stream = stream.add_elements([{"id": n, "image_path": image, "text": POISON if n == 1 else "a cat"}])
        stream = stream.advance_processing_time(1).advance_watermark_to(n + 1)
    stream = stream.advance_watermark_to_infinity()
    options = PipelineOptions(["--runner=BundleBasedDirectRunner"])
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    handler = FaultyHandler(str(longclip_checkpoint), BatchSettings(max_batch_size=4))
    scored, failed = pipeline | stream | ScoreLongCLIP(handler).with_exception_handling()
    scored | "IdsScored" >> beam.Map(lambda r: str(r["id"])) | "Scored" >> _write_lines("scored", tmp_path)
    (
        failed
        | "IdsFailed" >> beam.Map(lambda r: f"{r['id']}:{r['longclip_score_reason']}")
        | _write_lines("failed", tmp_path)
    )
    pipeline.run().wait_until_finish()
    assert sorted((tmp_path / "scored").read_text().split()) == ["0", "2", "3"]
    assert (tmp_path / "failed").read_text().split() == ["1:inference_failed"]


@settings(max_examples=3)
@given(data=st.data())
def test_fuzzed_records_and_damaged_images_each_come_out_once(tmp_path, longclip_checkpoint, good_images, data):
    """Fuzzing: records with fields of any type, pointing at image files of every format with damaged bytes,
    through a real pipeline: each comes out exactly once, scored or 0.0 with a reason; no worker fails."""
    from tests.support.fuzz import mutated_image, records

    run = tmp_path / str(next(_FUZZ_RUNS))
    run.mkdir()
    paths = []
    for number in range(6):
        name, damaged = data.draw(mutated_image(good_images))
        paths.append(str(run / f"{number}-{name}"))
        (run / f"{number}-{name}").write_bytes(damaged)
    paths += [str(good_images["rgb.png"]), str(run / "missing.png")]
    inputs = [{**data.draw(records(paths)), "id": n} for n in range(24)]
    score = ScoreLongCLIP(str(longclip_checkpoint), batching=BatchSettings(max_batch_size=4))
    outputs, _ = _run(inputs, score, run)
    assert sorted(out["id"] for out in outputs) == list(range(len(inputs)))
    for out in outputs:
        assert 0.0 <= out["longclip_score"] <= 1.0
        if out["longclip_score_reason"] is not None:
            assert out["longclip_score_reason"] in reasons.REASON_CODES and out["longclip_score"] == 0.0


_FUZZ_RUNS = itertools.count()


@pytest.mark.slow
def test_inline_images_score_like_files_and_embeddings_are_the_scored_features(
    tmp_path, longclip_checkpoint, longclip_state_dict, good_images
):
    """An image as a path, as raw bytes or as a Hugging Face struct scores alike, and no bytes reach the output.
    With embeddings, each scored record carries unit vectors whose clamp((dot + 1) / 2, 0, 1) is its score;
    failed records carry None."""
    records = []
    for name, caption in (("rgb.jpg", "short"), ("grey.png", "long_200_tokens"), ("cmyk.jpg", "over_248_tokens")):
        data = good_images[name].read_bytes()
        forms = {"path": str(good_images[name]), "bytes": data, "struct": {"bytes": data, "path": f"hf/{name}"}}
        for form, image in forms.items():
            records.append({"id": f"{name}/{form}", "name": name, "image_path": image, "text": CAPTIONS[caption]})
    records += [
        {"id": "bad/bytes", "image_path": b"not an image", "text": "a cat"},
        {"id": "bad/text", "image_path": {"bytes": data, "path": None}, "text": " "},
    ]
    fields = RecordFields(embeddings=True)
    score = ScoreLongCLIP(str(longclip_checkpoint), batching=BatchSettings(max_batch_size=4), fields=fields)
    outputs, _ = _run(records, score, tmp_path)
    assert sorted(o["id"] for o in outputs) == sorted(r["id"] for r in records)
    by_id = {o["id"]: o for o in outputs}
    for name in ("rgb.jpg", "grey.png", "cmyk.jpg"):
        path, raw, struct = (by_id[f"{name}/{form}"] for form in ("path", "bytes", "struct"))
        assert path["image_path"] == str(good_images[name]) and raw["image_path"] is None
        assert struct["image_path"] == f"hf/{name}"
        want = reference_score(longclip_state_dict, good_images[name], path["text"])
        for out in (path, raw, struct):
            assert abs(out["longclip_score"] - want) < 1e-6 and out["longclip_score_reason"] is None
            image = torch.tensor(out["longclip_score_image_embedding"], dtype=torch.float64)
            text = torch.tensor(out["longclip_score_text_embedding"], dtype=torch.float64)
            assert image.shape == text.shape == (32,)
            assert abs(image.norm() - 1) < 1e-5 and abs(text.norm() - 1) < 1e-5
            assert abs(min(max((image @ text + 1) / 2, 0), 1) - out["longclip_score"]) < 1e-6
        assert raw["longclip_score_image_embedding"] == path["longclip_score_image_embedding"]
    for bad, reason in (("bad/bytes", "image_undecodable"), ("bad/text", "text_empty")):
        out = by_id[bad]
        assert out["longclip_score"] == 0.0 and out["longclip_score_reason"] == reason and out["image_path"] is None
        assert out["longclip_score_image_embedding"] is None and out["longclip_score_text_embedding"] is None
