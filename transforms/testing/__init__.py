"""Generators and data shared by the tests and the benchmarks (like apache_beam.testing): tiny checkpoints in
the real LongCLIP format, real image files, WebDataset shards and Parquet files, captions, emulator launchers."""
