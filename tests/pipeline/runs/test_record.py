"""The run record's command line hides secrets; its settings are every settings object, whole."""

import dataclasses

from pipeline.runs.record import finish, redact_command, settings_of, status_of
from transforms.settings import ImageSettings, ModelSettings


def test_secrets_are_hidden_in_the_command_line():
    argv = [
        "--input", "https://reader:p4ss@example.com/data/in.jsonl",
        "--image_root=https://cdn.example.com/img?X-Goog-Signature=abc123&X-Goog-Expires=60",
        "--allowed_image_prefixes", "gs://,https://u:pw@host.example/x",
        "--hf_token", "hf_SECRETVALUE",
        "--api_key=KEY123",
        "--service_account_password", "--streaming",
        "--image_key", "url",
        "--output", "out/scored",
    ]  # fmt: skip
    shown = redact_command(argv)
    text = " ".join(shown)
    for secret in ("p4ss", "abc123", "pw@", "hf_SECRETVALUE", "KEY123"):
        assert secret not in text, secret
    assert shown[:2] == ["--input", "https://***@example.com/data/in.jsonl"]
    assert shown[2] == "--image_root=https://cdn.example.com/img?X-Goog-Signature=***&X-Goog-Expires=***"
    assert shown[4] == "gs://,https://***@host.example/x"
    assert shown[5:8] == ["--hf_token", "***", "--api_key=***"]
    # A secret-looking switch followed by another flag hides nothing; ordinary flags are kept as they are.
    assert shown[8:] == ["--service_account_password", "--streaming", "--image_key", "url", "--output", "out/scored"]


def test_every_settings_field_is_recorded_including_later_ones():
    @dataclasses.dataclass(frozen=True)
    class LaterSettings:  # a settings class added after this code was written
        chunking: str = "sentences"

    @dataclasses.dataclass(frozen=True)
    class Scoring:
        model: ModelSettings
        images: ImageSettings
        later: LaterSettings

    images = ImageSettings(image_root="https://u:secret@host/x")
    recorded = settings_of(Scoring(ModelSettings(model="m.pt"), images, LaterSettings()))
    assert recorded["LaterSettings"] == {"chunking": "sentences"}
    assert recorded["ModelSettings"] == dataclasses.asdict(ModelSettings(model="m.pt"))
    assert recorded["ImageSettings"]["image_root"] == "https://***@host/x"


def test_finish_adds_the_end_counts_and_what_the_retry_did():
    start = {"status": "running", "retry": {"retried": None, "now_pass": None, "kept": None}, "counts": None}
    counts = {"read": 200, "scored": 30, "retry_retried": 30, "retry_now_pass": 30, "retry_kept": 170}
    done = finish(start, counts, 0, status_of(0))
    assert done["status"] == "done" and done["exit_code"] == 0 and done["ended_at"]
    assert done["counts"] == counts and done["retry"] == {"retried": 30, "now_pass": 30, "kept": 170}
    assert start["status"] == "running"  # the plan's record is left as it was
    assert (status_of(3), status_of(1)) == ("nothing_worked", "failed")
