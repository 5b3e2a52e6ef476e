"""Which reader a file pattern needs: by its extension, unless --input_format says."""

import pytest

from pipeline.sources import input_format


@pytest.mark.parametrize(
    "pattern, chosen, expected",
    [
        ("data/captions-*.jsonl", "auto", "jsonl"),
        ("gs://bucket/laion/part-*.parquet", "auto", "parquet"),
        ("img2dataset/out/*.tar", "auto", "webdataset"),
        ("shards/00000.TAR", "auto", "webdataset"),
        ("data/captions.json", "auto", "jsonl"),
        ("shards/*", "webdataset", "webdataset"),
        ("export/*.tar", "jsonl", "jsonl"),
    ],
)
def test_input_format_follows_the_extension_unless_chosen(pattern, chosen, expected):
    assert input_format(pattern, chosen) == expected
