"""What changes scores between two run records, and what does not."""

import copy

from pipeline.runs.compare import describe, score_differences

RECORD = {
    "checkpoint": {"model": "m.pt", "sha256": "aa" * 32},
    "scoring": {"precision": "auto", "precision_used": "bf16", "weights": "rounded", "image_resolution": 336,
                "context_length": 248},
    "settings": {
        "ModelSettings": {"model": "m.pt", "device": None, "precision": "auto", "max_concurrent_batches": 1},
        "BatchSettings": {"min_batch_size": 1, "max_batch_size": 32, "max_batch_duration_secs": None},
        "RecordFields": {"image_key": "image_path", "text_key": "text", "output_key": "longclip_score",
                         "embeddings": False},
        "ImageSettings": {"image_root": "a/", "http_timeout_secs": 30.0, "prepare_threads": 4},
    },
}  # fmt: skip


def _changed(path, value):
    record = copy.deepcopy(RECORD)
    *head, last = path
    target = record
    for key in head:
        target = target[key]
    target[last] = value
    return record


def test_the_same_scoring_elsewhere_is_no_difference():
    other = _changed(("settings", "ModelSettings", "model"), "/elsewhere/m.pt")  # same bytes, other path
    for path, value in (
        (("settings", "BatchSettings", "max_batch_size"), 4),
        (("settings", "ImageSettings", "image_root"), "b/"),
        (("settings", "ImageSettings", "http_timeout_secs"), 1.0),
        (("settings", "RecordFields", "output_key"), "s"),
        (("settings", "ModelSettings", "precision"), "bf16"),  # auto gave bf16: the same precision used
        (("checkpoint", "model"), "/elsewhere/m.pt"),
    ):
        other = _changed(path, value)
        assert score_differences({"a": RECORD, "b": other}) == [], path


def test_what_changes_scores_is_named():
    cases = {
        "checkpoint": (("checkpoint", "sha256"), "bb" * 32),
        "precision": (("scoring", "precision_used"), "fp32"),
        "weights": (("scoring", "weights"), "as stored"),
        "image_resolution": (("scoring", "image_resolution"), 224),
        "RecordFields.text_key": (("settings", "RecordFields", "text_key"), "caption"),
    }
    for what, (path, value) in cases.items():
        (difference,) = score_differences({"a": RECORD, "b": _changed(path, value)})
        assert difference["what"] == what
    (difference,) = score_differences({"a": RECORD, "b": _changed(("scoring", "precision_used"), "fp32")})
    assert describe(difference) == "precision: bf16 (a), fp32 (b)"


def test_a_setting_added_later_counts_until_it_is_known_not_to():
    later = copy.deepcopy(RECORD)
    later["settings"]["ChunkSettings"] = {"long_captions": "chunks"}
    (difference,) = score_differences({"a": RECORD, "b": later})
    assert difference == {"what": "ChunkSettings.long_captions", "values": {"a": None, "b": "chunks"}}


def test_an_unhashed_checkpoint_compares_by_name():
    a = _changed(("checkpoint", "sha256"), None)
    assert score_differences({"a": a, "b": copy.deepcopy(a)}) == []
    (difference,) = score_differences({"a": a, "b": _changed(("checkpoint", "sha256"), "cc" * 32)})
    assert difference["what"] == "checkpoint"
