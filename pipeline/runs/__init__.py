"""Run records: what made an output, written beside it (`<output>.run.json`, Parquet key-value metadata, a
BigQuery table's description and `<table>_runs`), and read back by `--retry_failed` and the report.

- `checkpoint.py`: the checkpoint's bytes (SHA-256, size, Hub revision), as the job loads them;
- `record.py`: the record itself, made at preflight and finished with the counts;
- `store.py`: where records live: beside files, in Parquet metadata, in BigQuery;
- `compare.py`: which differences between two records change scores.
"""
