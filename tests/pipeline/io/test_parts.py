"""Finding the input files before the job starts, and cutting them into parts."""

import gzip
import os

import pytest

from pipeline.io.parts import InputProblem, plan_parts


def test_files_are_cut_into_parts_in_path_order(tmp_path):
    (tmp_path / "b.jsonl").write_bytes(b"x" * 25)
    (tmp_path / "a.jsonl").write_bytes(b"y" * 10)
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(b"z\n" * 100))
    (tmp_path / "folder.jsonl").mkdir()
    parts = plan_parts(str(tmp_path / "*.jsonl*"), part_bytes=10)
    assert [(os.path.basename(p.path), p.start, p.end, p.compressed) for p in parts] == [
        ("a.jsonl", 0, 10, False),
        ("b.jsonl", 0, 10, False),
        ("b.jsonl", 10, 20, False),
        ("b.jsonl", 20, 25, False),
        ("c.jsonl.gz", 0, (tmp_path / "c.jsonl.gz").stat().st_size, True),  # read whole: no seeking in gzip
    ]
    assert len({part.id for part in parts}) == len(parts)
    assert [p.id for p in plan_parts(str(tmp_path / "*.jsonl*"), part_bytes=10)] == [p.id for p in parts]


def test_file_urls_are_local_paths(tmp_path):
    (tmp_path / "in put.jsonl").write_text("{}\n")
    (part,) = plan_parts((tmp_path / "in put.jsonl").as_uri())
    assert part.path == str(tmp_path / "in put.jsonl")
    with pytest.raises(InputProblem, match="on host 'server'"):
        plan_parts("file://server/share/x.jsonl")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: str(d / "missing.jsonl"), "no file matches"),
        (lambda d: str(d / "*.nothing"), "no file matches"),
        (lambda d: str(d), "is a folder: give a file, or a glob such as"),
        (lambda d: "nosuchscheme://bucket/x.jsonl", "cannot list 'nosuchscheme://bucket/x.jsonl'"),
    ],
)
def test_inputs_that_cannot_be_read_say_why(tmp_path, make, message):
    with pytest.raises(InputProblem, match=message):
        plan_parts(make(tmp_path))
