"""Combinations of flags that cannot work are refused from the flags alone, naming the fix."""

import pytest

from pipeline import UsageError, parse


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--input", "in.jsonl", "--output", "out/x", "--output_format", "webdataset"],
            "--output_format webdataset copies the samples of WebDataset shards: it needs .tar shards as --input",
        ),
        (
            ["--input", "in.parquet", "--output", "out/x", "--output_format", "webdataset"],
            "(or --input_format webdataset); use jsonl or parquet for other inputs",
        ),
        (
            ["--streaming", "--input", "in/*.tar", "--output", "out/x", "--output_format", "webdataset"],
            "--output_format webdataset is for batch jobs; a streaming job writes JSONL files",
        ),
        (
            ["--streaming", "--input_topic", "projects/p/topics/t", "--output", "x", "--output_format", "webdataset"],
            "--output_format webdataset is for batch jobs",
        ),
        (
            ["--input", "in/*.tar", "--output", "out/x", "--samples_per_shard", "100"],
            "--samples_per_shard is the size of WebDataset output shards: add --output_format webdataset",
        ),
        (
            ["--input", "in/*.tar", "--output", "x", "--output_format", "webdataset", "--samples_per_shard", "0"],
            "--samples_per_shard: must be at least 1",
        ),
        (
            ["--input", "in/*.tar", "--output", "out/x", "--output_format", "webdataset", "--resume"],
            "--resume reads JSONL input part by part and writes JSONL files",
        ),
    ],
)
def test_webdataset_output_needs_shards_in_a_batch_job(argv, message):
    with pytest.raises(UsageError) as refused:
        parse(argv)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_webdataset_output_from_shards_or_named_input_format_is_accepted():
    for argv in (["--input", "in/*.tar"], ["--input", "in/shards-*", "--input_format", "webdataset"]):
        flags = parse([*argv, "--output", "out/x", "--output_format", "webdataset", "--samples_per_shard", "5"])
        assert (flags.job.output_format, flags.job.samples_per_shard) == ("webdataset", 5)
