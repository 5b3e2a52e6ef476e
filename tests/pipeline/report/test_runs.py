"""The report shows the run records of its inputs, and flags runs whose scores are not comparable. The records are
made by the job's own preflight (as a run makes them), beside scored rows from the report tests' generator."""

import json

import pytest

from pipeline.cli.command import parse
from pipeline.preflight import preflight
from pipeline.report.job import run as report
from pipeline.runs import store
from tests.support.scored import make_scored_rows, write_jsonl


def _output(folder, name, longclip_checkpoint, *flags, seed=0):
    """`<folder>/<name>/scored-*.jsonl` with the run record the job's preflight makes for `flags`."""
    (folder / "in.jsonl").write_text('{"image_path": "a.png", "text": "a cat"}\n')
    prefix = folder / name / "scored"
    argv = ["--input", str(folder / "in.jsonl"), "--output", str(prefix), "--model", str(longclip_checkpoint), *flags]
    plan = preflight(parse(argv))
    write_jsonl(folder / name / "scored-00000-of-00001.jsonl", make_scored_rows(200, seed=seed))
    store.write_file(str(prefix), plan.run_record)
    return prefix


@pytest.mark.slow
def test_two_runs_in_other_precisions_are_flagged(tmp_path, longclip_checkpoint, caplog):
    _output(tmp_path, "a", longclip_checkpoint)
    _output(tmp_path, "b", longclip_checkpoint, "--precision", "bf16", seed=1)
    summary = report(["--input", str(tmp_path / "*" / "scored-*"), "--output", str(tmp_path / "report")])
    assert sorted(summary["runs"]) == [str(tmp_path / "a" / "scored"), str(tmp_path / "b" / "scored")]
    assert summary["rows"] == 400  # the records are not read as rows
    (difference,) = summary["runs_differ"]
    assert difference["what"] == "precision"
    assert difference["values"] == {str(tmp_path / "a" / "scored"): "fp32", str(tmp_path / "b" / "scored"): "bf16"}
    page = (tmp_path / "report" / "report.html").read_text()
    assert 'id="runs-differ"' in page and "precision: fp32" in page and "not comparable" in page
    assert page.index('id="runs"') < page.index('class="cards"')  # at the top
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["runs_differ"] == summary["runs_differ"]
    assert any("score differently: precision" in message for message in caplog.messages)


@pytest.mark.slow
def test_runs_that_differ_only_in_batching_and_destinations_are_not_flagged(tmp_path, longclip_checkpoint):
    _output(tmp_path, "a", longclip_checkpoint)
    _output(tmp_path, "b", longclip_checkpoint, "--max_batch_size", "4", "--prepare_threads", "1", seed=1)
    summary = report(["--input", str(tmp_path / "*" / "scored-*"), "--output", str(tmp_path / "report")])
    assert len(summary["runs"]) == 2 and summary["runs_differ"] == []
    page = (tmp_path / "report" / "report.html").read_text()
    assert 'id="runs"' in page and 'id="runs-differ"' not in page
    assert "sha256 " + summary["runs"][str(tmp_path / "a" / "scored")]["checkpoint"]["sha256"][:12] in page


def test_flags_not_given_come_from_the_run_records_when_they_agree():
    from pipeline.report.options import check_flags
    from pipeline.report.runs import settings_from_records

    def run_with(image_key, image_root):
        return {"settings": {"RecordFields": {"image_key": image_key}, "ImageSettings": {"image_root": image_root}}}

    settings, _, _ = check_flags(["--input", "x", "--output", "y", "--text_key", "caption"])
    one = {"a": run_with("image", "gs://bucket/images"), "b": run_with("image", "gs://bucket/images")}
    taken = settings_from_records(settings, ["input", "output", "text_key"], one)
    assert (taken.fields.image_key, taken.images.image_root, taken.fields.text_key) == (
        "image", "gs://bucket/images", "caption"
    )  # fmt: skip
    given = settings_from_records(settings, ["image_key"], one)
    assert given.fields.image_key == "image_path"  # a flag on the command line wins
    differ = settings_from_records(settings, [], {"a": run_with("image", None), "b": run_with("jpg", None)})
    assert (differ.fields.image_key, differ.images.image_root) == ("image_path", None)  # the runs disagree
    hidden = settings_from_records(settings, [], {"a": run_with("image", "https://***@host/images?sig=***")})
    assert hidden.images.image_root is None  # a redacted root would not work
    broken = settings_from_records(settings, [], {"a": {"settings": None}, "b": {"settings": {"RecordFields": 3}}})
    assert broken == settings  # a record edited by hand, or of another version: nothing taken, no crash
    assert settings_from_records(settings, [], {"a": run_with("", None)}) == settings  # not a valid key
