"""Which differences between two run records change scores.

A score depends on the checkpoint's bytes, the precision the model ran in, whether the weights were rounded as
LongCLIP's loader does, the input sizes, and which fields hold the image and caption. Every other setting of
the run record's `settings` counts too, unless it is listed in `KEEPS_SCORES` (where records go, batching,
threads, limits that decide failures rather than scores): a setting added later is taken as one that changes
scores until it is listed here. Package versions are not compared (they may move the last digits).

Standard library only: the report uses it.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

# Settings (by class, then field) that never change the score of a record that is scored.
KEEPS_SCORES: dict[str, frozenset[str]] = {
    # The checkpoint, precision, weights and input sizes are compared through the record's `checkpoint` and
    # `scoring`, as used: `model` names a file whose bytes may differ, `precision` may be "auto".
    "ModelSettings": frozenset(
        {
            "model",
            "device",
            "precision",
            "stored_weights",
            "share_model_across_processes",
            "model_copies",
            "max_concurrent_batches",
            "image_resolution",
            "context_length",
        }
    ),
    "BatchSettings": frozenset({"min_batch_size", "max_batch_size", "max_batch_duration_secs"}),
    "RecordFields": frozenset({"output_key", "embeddings"}),
    "ImageSettings": frozenset(
        {
            "image_root",
            "max_image_bytes",
            "max_image_pixels",
            "http_timeout_secs",
            "prepare_threads",
            "allowed_image_prefixes",
        }
    ),
}


def score_identity(record: Mapping[str, Any]) -> dict[str, Any]:
    """What of `record` decides its scores, flat: `checkpoint`, `precision`, `weights`, `image_resolution`,
    `context_length`, and `<Settings>.<field>` for every setting not in `KEEPS_SCORES`."""
    checkpoint = record.get("checkpoint") or {}
    scoring = record.get("scoring") or {}
    identity: dict[str, Any] = {
        # The bytes when known; else the name, which is all there is to compare.
        "checkpoint": checkpoint.get("sha256") or f"{checkpoint.get('model')} (not hashed)",
        "precision": scoring.get("precision_used") or scoring.get("precision"),
        "weights": scoring.get("weights"),
        "image_resolution": scoring.get("image_resolution"),
        "context_length": scoring.get("context_length"),
    }
    for cls, values in sorted((record.get("settings") or {}).items()):
        neutral = KEEPS_SCORES.get(cls, frozenset())
        identity.update((f"{cls}.{name}", value) for name, value in sorted(values.items()) if name not in neutral)
    return identity


def score_differences(records: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For records by name (e.g. output prefix), each item of `score_identity` on which they do not all agree:
    `{"what": name, "values": {record name: value}}`. Empty when they would score alike."""
    identities = {name: score_identity(record) for name, record in sorted(records.items())}
    names = sorted({key for identity in identities.values() for key in identity})
    differences = []
    for key in names:
        values = {name: identity.get(key) for name, identity in identities.items()}
        if len({_hashable(value) for value in values.values()}) > 1:
            differences.append({"what": key, "values": values})
    return differences


def describe(difference: Mapping[str, Any], limit: Optional[int] = 80) -> str:
    """One difference in words: `precision: fp32 (out/a/scored), bf16 (out/b/scored)`."""

    def shown(value: Any) -> str:
        text = str(value)
        return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"

    values = ", ".join(f"{shown(value)} ({name})" for name, value in difference["values"].items())
    return f"{difference['what']}: {values}"


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _hashable(item)) for key, item in value.items()))
    return value
