"""Readers and writers of the job: each reader returns records plus a `records.DEAD_LETTER` output, each writer
takes records (or dead-letter entries); none of them knows about the job's flags."""
