"""`--resume`'s manifests: a part is committed only when its files hold every line it read, and is done only
while they are as written."""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.io import manifests, records, resume
from pipeline.io.parts import InputPart


def _staged(tmp_path, part, **files) -> str:
    output = str(tmp_path / "out" / "scored")
    staging = tmp_path / "out" / "scored.resume" / f"staging-{part.id}"
    staging.mkdir(parents=True)
    for name, text in files.items():
        (staging / f"{name}.jsonl").write_text(text)
    return output


def test_a_part_whose_files_miss_a_line_is_not_committed(tmp_path):
    part = InputPart(str(tmp_path / "in.jsonl"), 0, 100, 100, False)
    output = _staged(tmp_path, part, **{"scored-a": "{}\n{}\n", "scored-b": "{}\n", "dead-a": "{}\n"})
    with pytest.raises(manifests.PartIncomplete, match="5 lines read but 4 written"):
        manifests.commit(part, output, f"{output}.dead_letter", lines_read=5)
    # Nothing was put in place: the part is not done, and its staged files wait for the next attempt.
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["scored.resume"]
    assert manifests.check_part(part, output, f"{output}.dead_letter") == (False, None)


def test_a_committed_part_is_done_while_its_files_are_as_written(tmp_path):
    part = InputPart(str(tmp_path / "in.jsonl"), 0, 100, 100, False)
    output = _staged(tmp_path, part, **{"scored-a": '{"a": 1}\n', "scored-b": '{"a": 2}\n'})
    manifest = manifests.commit(part, output, f"{output}.dead_letter", lines_read=2)
    assert [(entry["kind"], entry["rows"]) for entry in manifest["files"]] == [("scored", 2)]  # no dead letters
    placed = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert placed == [f"scored-part-{part.id}.jsonl", "scored.resume"]
    assert manifests.check_part(part, output, f"{output}.dead_letter") == (True, None)
    scored = tmp_path / "out" / f"scored-part-{part.id}.jsonl"
    scored.write_text(scored.read_text().replace("1", "3"))
    assert manifests.check_part(part, output, f"{output}.dead_letter") == (
        False,
        f"{scored} is not what was written (its SHA-256 differs)",
    )
    other = part._replace(end=50)
    assert manifests.check_part(other, output, f"{output}.dead_letter") == (False, None)


def test_lines_read_is_the_parts_read_counter():
    with beam.Pipeline(options=PipelineOptions(["--runner", "FnApiRunner"])) as pipeline:
        lines = pipeline | beam.Create([("f", b'{"a": 1}'), ("f", b"not json"), ("f", b"{}")])
        _ = lines | records.ParseJsonLines()
    assert resume.lines_read(pipeline.result) == 3
