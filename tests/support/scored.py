"""Rows as the scoring job writes them (score, reason, error, truncated), for the report's tests.

Scores come from a seeded random mix, not from a model: the report's figures are checked against numpy
on the very same scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

FAILURE_REASONS = ("image_not_found", "image_undecodable", "text_empty")


def make_scored_rows(count: int, images: Optional[list[str]] = None, seed: int = 0) -> list[dict]:
    """`count` rows: about 5% failed (score 0.0 with a reason), the rest scored in a skewed spread around
    0.6, captions from 3 to 160 words (about 6 to 450 tokens; those over LongCLIP's 248 marked truncated)."""
    rng = np.random.default_rng(seed)
    images = images or ["img/a.jpg"]
    rows = []
    for i in range(count):
        words = int(rng.integers(3, 160))
        text = " ".join(f"w{j % 50}" for j in range(words))
        row = {"id": i, "image_path": images[i % len(images)], "text": text}
        if rng.random() < 0.05:
            reason = FAILURE_REASONS[i % len(FAILURE_REASONS)]
            row.update(longclip_score=0.0, longclip_score_reason=reason, longclip_score_error=f"{reason}: x")
        else:
            score = float(np.clip(0.6 + 0.05 * rng.standard_normal() - 0.03 * rng.exponential(), 0, 1))
            row.update(longclip_score=score, longclip_score_reason=None, longclip_score_error=None)
        row["longclip_score_truncated"] = words >= 89  # from 89 such words, over 248 tokens with start and end
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    """The same rows as a Parquet file, one column per field (as the job's Parquet output has them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def scores_of(rows: list[dict]) -> np.ndarray:
    return np.array([row["longclip_score"] for row in rows if row["longclip_score_reason"] is None])
