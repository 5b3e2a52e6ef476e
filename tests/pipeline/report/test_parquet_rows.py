"""The report reads Parquet rows the way the job does (`pipeline.io.arrow.table_rows`): every valid value."""

import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.parts import plan_parts
from pipeline.report.read import ReadScoredRows
from transforms import RecordFields


def test_the_report_reads_rows_with_values_python_cannot_hold(tmp_path):
    """Beam's `ReadAllFromParquet` stopped the report on a nanosecond timestamp (pandas' default unit)."""
    table = pa.table(
        {
            "image_path": ["a.png", "b.png"],
            "text": ["a cat", "a dog"],
            "taken": pa.array([1_700_000_000_123_456_789, None], pa.timestamp("ns")),
            "day": pa.array([2_932_897, 0], pa.date32()),  # 10000-01-01
            "id": pa.array([bytes(range(16)), None], pa.uuid()),
            "longclip_score": [0.7, 0.0],
            "longclip_score_reason": [None, "image_not_found"],
        }
    )
    pq.write_table(table, tmp_path / "scored-00000-of-00001.parquet")
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        (
            pipeline
            | ReadScoredRows(plan_parts(str(tmp_path / "scored-00000-of-00001.parquet")), RecordFields(), 1 << 20)
            | beam.Map(lambda row: json.dumps({"text": row["text"], "score": row["longclip_score"]}))
            | beam.io.WriteToText(str(tmp_path / "rows"), shard_name_template="")
        )
    rows = sorted((json.loads(line) for line in (tmp_path / "rows").read_text().splitlines()), key=str)
    assert rows == [{"text": "a cat", "score": 0.7}, {"text": "a dog", "score": 0.0}]
