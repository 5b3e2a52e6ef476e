"""The job's plan: everything the flags and the environment decide, resolved once by `pipeline.preflight` before
anything runs, then only read. `pipeline.build` assembles the graph from it; the log says where every record
goes from it; nothing changes it on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Union

from pipeline.io.formats import DEFAULT_SAMPLES_PER_SHARD
from pipeline.io.parts import InputPart
from transforms.settings import BatchSettings, ImageSettings, ModelSettings, RecordFields


@dataclass(frozen=True)
class FileInput:
    """The --input files: their format, and their parts (JSONL files are cut into parts of --input_part_bytes;
    a WebDataset shard or Parquet file is one part). `todo`: the parts this run reads (all, unless --resume found
    some done)."""

    pattern: str
    format: str  # jsonl, webdataset or parquet
    parts: tuple[InputPart, ...]
    todo: tuple[InputPart, ...]
    max_line_bytes: int
    image_extensions: tuple[str, ...]

    def total_bytes(self) -> Optional[int]:
        """The bytes of JSONL lines this run reads, for percent done; None when a part is compressed (its size
        is not known) or the files are not JSONL."""
        if self.format != "jsonl" or any(part.compressed for part in self.todo):
            return None
        return sum(part.end - part.start for part in self.todo)

    def only(self, part: InputPart) -> FileInput:
        """This input with one part left to read (--resume runs a pipeline per part)."""
        return FileInput(self.pattern, self.format, self.parts, (part,), self.max_line_bytes, self.image_extensions)


@dataclass(frozen=True)
class PubSubInput:
    """A Pub/Sub subscription or topic, one JSON object per message (streaming). `stoppable`: read with the job's
    own reader for Beam's local streaming runner, which Ctrl-C and SIGTERM stop (`pipeline.local_streaming`)."""

    subscription: Optional[str]
    topic: Optional[str]
    id_label: Optional[str]
    timestamp_attribute: Optional[str]
    attributes_key: Optional[str]
    stoppable: bool = False

    format = "pubsub"  # beside FileInput.format: what the records are read from


@dataclass(frozen=True)
class Destinations:
    """Where every record goes, defaults filled in: scored rows, rejected rows (with a filter) and dead letters,
    as file prefixes, BigQuery tables (PROJECT:DATASET.TABLE) and a Pub/Sub topic. None: not there."""

    output: Optional[str]
    output_format: str
    output_table: Optional[str]
    dead_letter: Optional[str]
    dead_letter_topic: Optional[str]
    dead_letter_table: Optional[str]
    rejected_output: Optional[str]
    rejected_table: Optional[str]
    window_seconds: float
    samples_per_shard: int = DEFAULT_SAMPLES_PER_SHARD  # output_format webdataset

    def described(self, resume: bool) -> tuple[str, str]:
        """Where scored records go, and where dead letters go, in words for the log."""
        scored = []
        if self.output:
            extension = {"parquet": ".parquet", "webdataset": ".tar"}.get(self.output_format, ".jsonl")
            scored.append(f"{self.output}-part-ID.jsonl files" if resume else f"{self.output}-*{extension} files")
        if self.output_table:
            scored.append(f"BigQuery table {self.output_table}")
        dead = [f"BigQuery table {self.dead_letter_table}"] if self.dead_letter_table else []
        if self.dead_letter_topic:
            dead.append(f"Pub/Sub topic {self.dead_letter_topic}")
        if self.dead_letter:
            dead.append(f"{self.dead_letter}{'-part-ID.jsonl' if resume else '-*.jsonl'} files")
        return " and ".join(scored), " and ".join(dead)


@dataclass(frozen=True)
class KeepFilter:
    """Which scored rows to keep (the rest go to the rejected destinations)."""

    min_score: Optional[float]
    top_fraction: Optional[float]


@dataclass(frozen=True)
class Scoring:
    """The `ScoreLongCLIP` settings, as the workers use them: the model's input sizes are filled in (read from the
    checkpoint's header), and on Dataflow GPU workers the device and model sharing."""

    model: ModelSettings
    batching: BatchSettings
    fields: RecordFields
    images: ImageSettings


@dataclass(frozen=True)
class JobPlan:
    """What `build` assembles and `run` runs."""

    source: Union[FileInput, PubSubInput]
    destinations: Destinations
    scoring: Scoring
    keep: Optional[KeepFilter]
    resume: bool
    local: bool
    beam: Any = field(compare=False)  # Beam's PipelineOptions, defaults included
    # The Parquet input's own columns (from the files' footers, read for every Parquet job), which Parquet output keeps.
    input_schema: Any = field(default=None, compare=False)
    # --retry_failed: --input is an earlier run's scored files (pipeline/retry.py).
    retry_failed: bool = False
    # A batch job ends with exit code 3 when more than this fraction of its records failed (pipeline/failure_rate.py).
    max_failed_fraction: float = 1.0
    # The run record as the job starts (pipeline/runs/record.py), written beside every output.
    run_record: Any = field(default=None, compare=False)
    # Files removed before the job starts: temporary leftovers of a failed run under the destinations' prefixes,
    # and with --overwrite the outputs of an earlier run (`pipeline.destinations`).
    remove_first: tuple[str, ...] = ()
    # --resume: the job manifest (JSON) written before the first part (`pipeline.io.manifests`).
    resume_manifest: Optional[str] = None

    @property
    def files(self) -> Optional[FileInput]:
        return self.source if isinstance(self.source, FileInput) else None
