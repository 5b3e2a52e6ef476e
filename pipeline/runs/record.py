"""The run record: what made an output, for people and for `--retry_failed` and the report to compare.

Made once by the preflight (`start`), held by the plan, written when the job starts (status `running`) and
again when it ends (`finish`: end time, counts, exit code). Every settings object of the plan's `Scoring` is
dumped whole with `dataclasses.asdict`, so settings added later are recorded without a change here.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import re
from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Sequence

from pipeline.runs import checkpoint
from transforms.inputs.locations import HIDDEN, has_scheme, redact

FORMAT_VERSION = 1
COMMAND = "python -m pipeline"
# Distributions whose versions can change what the job does (this project's first).
PACKAGES = ("longclip-beam", "torch", "open_clip_torch", "apache-beam", "Pillow")
# A flag whose name says it holds a secret has its value shown as ***.
SECRET_FLAG = re.compile(r"secret|token|password|passwd|credential|api_?key|auth|signature", re.IGNORECASE)

RUNNING, DONE, FAILED, NOTHING_WORKED, CANCELLED = "running", "done", "failed", "nothing_worked", "cancelled"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def start(plan: Any, argv: Sequence[str], started_at: str) -> dict[str, Any]:
    """The record of the job `plan` (a `JobPlan`, its input sizes filled in) as it starts; `argv`: its command
    line. Hashes the checkpoint (see `checkpoint`)."""
    scoring, local = plan.scoring, plan.local
    model = scoring.model
    identity = checkpoint.identify(model.model, local=local)
    architecture = _architecture(identity) if identity["resolved"] else None
    used, why = _precision(model, local)
    if checkpoint.is_huggingface_folder(identity["files"]):
        weights = "as stored (a Hugging Face CLIPModel's loader keeps them)"
    elif model.stored_weights:
        weights = "as stored (--stored_weights)"
    else:
        weights = "rounded to fp16 as LongCLIP's loader does"
    return {
        "run_record": FORMAT_VERSION,
        "status": RUNNING,
        "exit_code": None,
        "started_at": started_at,
        "ended_at": None,
        "command": [COMMAND, *redact_command(argv)],
        "input": _source(plan),
        "outputs": {name: _redact_value(value) for name, value in dataclasses.asdict(plan.destinations).items()},
        "checkpoint": identity,
        "architecture": architecture,
        "scoring": {
            "precision": model.precision,
            "precision_used": used,
            "precision_why": why,
            "weights": weights,
            "image_resolution": model.image_resolution,
            "context_length": model.context_length,
        },
        "settings": settings_of(scoring),
        "versions": versions(),
        "versions_from": "this machine, which ran the workers" if local else "the launching machine, not the workers",
        "counts": None,
        "retry": {"retried": None, "now_pass": None, "kept": None} if plan.retry_failed else None,
    }


def status_of(exit_code: int) -> str:
    return {0: DONE, 3: NOTHING_WORKED}.get(exit_code, FAILED)


def finish(record: Mapping[str, Any], counts: Optional[Mapping[str, int]], exit_code: int, status: str) -> dict:
    """The record at the end: status, exit code, end time, the job's counters (and what `--retry_failed` did)."""
    done = dict(record)
    done.update(status=status, exit_code=exit_code, ended_at=now(), counts=dict(sorted((counts or {}).items())))
    if record.get("retry") is not None and counts is not None:
        done["retry"] = {
            "retried": counts.get("retry_retried", 0),
            "now_pass": counts.get("retry_now_pass", 0),
            "kept": counts.get("retry_kept", 0),
        }
    return done


def settings_of(scoring: Any) -> dict[str, dict]:
    """Every settings object the plan's `Scoring` holds, by class name, with string values redacted."""
    out = {}
    for field in dataclasses.fields(scoring):
        value = getattr(scoring, field.name)
        if dataclasses.is_dataclass(value):
            out[type(value).__name__] = {key: _redact_value(item) for key, item in dataclasses.asdict(value).items()}
    return out


def versions() -> dict[str, Optional[str]]:
    """Versions of this project, torch, open_clip, Beam and Pillow, and Python, on the launching machine (on a
    remote runner the workers run their container's, which the record cannot see)."""
    found: dict[str, Optional[str]] = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    return found


def redact_command(argv: Sequence[str]) -> list[str]:
    """The arguments with secrets hidden: URL user info and query values (signed-URL tokens) as `***`, and the
    value of any flag whose name looks like a secret's (`--api_key`, `--hf_token`, ...)."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not arg.startswith("--"):
            out.append(HIDDEN)
            hide_next = False
            continue
        hide_next = False
        if arg.startswith("--"):
            name, equals, value = arg[2:].partition("=")
            if SECRET_FLAG.search(name):
                out.append(f"--{name}={HIDDEN}" if equals else arg)
                hide_next = not equals
            else:
                out.append(f"--{name}={_redact_value(value)}" if equals else arg)
            continue
        out.append(_redact_value(arg))
    return out


def _redact_value(value: Any) -> Any:
    """A string with URLs in it (one, or a comma-separated list) redacted; other values as they are."""
    if not isinstance(value, str) or "://" not in value:
        return value
    return ",".join(_redact_url(part) for part in value.split(","))


def _redact_url(text: str) -> str:
    """`redact` where there is something to hide (user info, a query): other URLs stay as written (`gs://`)."""
    return redact(text) if has_scheme(text.strip()) and ("@" in text or "?" in text) else text


def _source(plan: Any) -> dict[str, Any]:
    files = plan.files
    if files is not None:
        count = len({part.path for part in files.parts})
        return {"format": files.format, "pattern": _redact_value(files.pattern), "files": count}
    source = plan.source
    return {"format": source.format, "subscription": source.subscription, "topic": source.topic}


def _architecture(identity: Mapping[str, Any]) -> Optional[dict]:
    from transforms.model.architecture import read_architecture

    return dataclasses.asdict(read_architecture(identity["resolved"]))


def _precision(model: Any, local: bool) -> tuple[Optional[str], str]:
    """The precision the model runs in, and why; for `auto` on a remote runner, unknown here."""
    if model.precision != "auto":
        return model.precision, "as requested"
    if not local:
        return None, "auto: decided on each worker, by its device"
    from transforms.model.device import pick_device, resolve_precision

    return resolve_precision(model.precision, pick_device(model.device))
