"""The file formats the job reads and writes, and their defaults: facts shared by the flags (which must not
import Beam) and the readers. Standard library only."""

from __future__ import annotations

INPUT_FORMATS = ("auto", "jsonl", "webdataset", "parquet")
OUTPUT_FORMATS = ("jsonl", "parquet", "webdataset")
# A WebDataset sample's image member: the first of these extensions it has (img2dataset writes jpg).
DEFAULT_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
# JSONL input is read in parts of this many bytes: about 20k records of a typical caption file, minutes of GPU work.
DEFAULT_PART_BYTES = 4 << 20
# --output_format webdataset: samples per output shard, as img2dataset's --number_sample_per_shard.
DEFAULT_SAMPLES_PER_SHARD = 10_000
# A longer JSONL line is not read: the job dead-letters it, the report counts it as unreadable.
DEFAULT_MAX_LINE_BYTES = 16 << 20


def input_format(file_pattern: str, chosen: str = "auto") -> str:
    """`chosen`, or with "auto" the format the pattern's extension names: .tar is WebDataset, .parquet
    Parquet, anything else JSONL."""
    if chosen != "auto":
        return chosen
    name = file_pattern.lower()
    return "webdataset" if name.endswith(".tar") else "parquet" if name.endswith(".parquet") else "jsonl"
