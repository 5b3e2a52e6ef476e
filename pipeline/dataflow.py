"""What Dataflow workers need for a first run to work, filled in (or refused, saying why) before submission.

- **Boot disk.** The worker image is about 8 GB unpacked, pulled next to its compressed layers, and the
  checkpoint (1.7 GB for LongCLIP-L-336px) is copied once per VM beside it; Dataflow's default batch disk is
  25 GB. Unless `--disk_size_gb` is given, workers get `DEFAULT_DISK_SIZE_GB` (Google's GPU samples use 50).
- **GPU workers** (the `worker_accelerator` service option, or an `accelerator` resource hint):
  - the accelerator must say `install-nvidia-driver` (else no driver: CUDA cannot start), `count:1` (one model
    per VM: more GPUs would sit idle, Dataflow scales out with workers instead), and fit `--machine_type`;
  - `--device` is `cuda`: a worker whose CUDA does not start fails loudly instead of scoring on its CPU;
  - one model per VM: Dataflow runs one SDK process per vCPU, each would load its own copy onto the one GPU,
    so `--share_model_across_processes` is on (unless `no_use_multiple_sdk_containers` leaves one process);
  - worker threads are capped (`--number_of_worker_harness_threads`), as Google's dataflow-ml-starter does
    for GPU jobs: 1 per SDK process, 4 in a single SDK process. Each thread holds a bundle's records in flight.
- A `--device cuda` without a GPU requested is refused.

Standard library and Beam's option classes only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)

from pipeline.cli.kit import UsageError
from transforms.settings import ModelSettings

DEFAULT_DISK_SIZE_GB = 50
THREADS_PER_SDK_PROCESS = 1
THREADS_IN_ONE_SDK_PROCESS = 4
ONE_SDK_PROCESS = "no_use_multiple_sdk_containers"
# GPU type -> machine type prefixes it attaches to (https://cloud.google.com/dataflow/docs/gpu/gpu-support).
MACHINE_FAMILIES = {
    "nvidia-l4": ("g2-",),
    "nvidia-tesla-a100": ("a2-highgpu-", "a2-megagpu-"),
    "nvidia-a100-80gb": ("a2-ultragpu-",),
    "nvidia-h100-80gb": ("a3-highgpu-", "a3-edgegpu-"),
    "nvidia-h100-mega-80gb": ("a3-megagpu-",),
    "nvidia-tesla-t4": ("n1-", "custom-"),
    "nvidia-tesla-v100": ("n1-", "custom-"),
    "nvidia-tesla-p100": ("n1-", "custom-"),
    "nvidia-tesla-p4": ("n1-", "custom-"),
}


@dataclass(frozen=True)
class Accelerator:
    """A GPU request as Dataflow takes it: `type:nvidia-l4;count:1;install-nvidia-driver`."""

    type: str
    count: int
    install_driver: bool
    flag: str  # where it was given, for messages

    @classmethod
    def parse(cls, value: str, flag: str) -> "Accelerator":
        fields: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in value.split(";"))):
            key, _, setting = part.partition(":")
            fields[key.strip()] = setting.strip()
        if not fields.get("type"):
            raise UsageError(f"{flag}: the accelerator {value!r} names no type, e.g. type:nvidia-l4;count:1;...")
        try:
            count = int(fields.get("count", "1"))
        except ValueError:
            raise UsageError(f"{flag}: count:{fields['count']} is not a number in {value!r}") from None
        return cls(fields["type"], count, "install-nvidia-driver" in fields, flag)


def is_dataflow(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner or ""
    return runner.lower().removesuffix("runner") == "dataflow" or runner.endswith(".DataflowRunner")


def find_accelerator(options: PipelineOptions) -> Optional[Accelerator]:
    """The GPU request among the service options, the experiments (a Flex Template's `--additional-experiments`)
    and the resource hints; None when there is none."""
    candidates = [
        ("--dataflow_service_options", options.view_as(GoogleCloudOptions).dataflow_service_options or []),
        ("--experiments", options.view_as(DebugOptions).experiments or []),
    ]
    for flag, values in candidates:
        for value in values:
            if value.startswith("worker_accelerator="):
                return Accelerator.parse(value.removeprefix("worker_accelerator="), flag)
    for hint in options.view_as(StandardOptions).resource_hints or []:
        if hint.startswith("accelerator="):
            return Accelerator.parse(hint.removeprefix("accelerator="), "--resource_hints")
    return None


@dataclass(frozen=True)
class WorkerDefaults:
    """What a Dataflow job's workers get beyond the flags as given: arguments to add (Beam's options and the
    job's flags, so that the job's options as Dataflow shows them are what it runs), the model's settings as
    the workers use them, and a line per default for the log."""

    beam_args: tuple[str, ...]
    model: ModelSettings
    notes: tuple[str, ...]


def worker_defaults(options: PipelineOptions, model: ModelSettings) -> WorkerDefaults:
    """The worker settings above for a Dataflow job. Raises `UsageError` for a combination that cannot work."""
    workers = options.view_as(WorkerOptions)
    debug = options.view_as(DebugOptions)
    beam_args: list[str] = []
    notes = []
    if workers.disk_size_gb is None:
        beam_args += ["--disk_size_gb", str(DEFAULT_DISK_SIZE_GB)]
        notes.append(f"--disk_size_gb {DEFAULT_DISK_SIZE_GB}: the worker image and the checkpoint need more than 25 GB")
    accelerator = find_accelerator(options)
    if accelerator is None:
        if model.device and model.device.startswith("cuda"):
            raise UsageError(
                f"--device {model.device}: no GPU is requested for the Dataflow workers; add "
                '--dataflow_service_options "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver" '
                "(and --machine_type g2-standard-8)"
            )
        return WorkerDefaults(tuple(beam_args), model, tuple(notes))
    _check_accelerator(accelerator, workers.machine_type)
    if model.device is None:
        model = dataclasses.replace(model, device="cuda")
        beam_args += ["--device", "cuda"]  # the job's options as Dataflow shows them are what its workers run
        notes.append("--device cuda: GPU workers score on the GPU, and fail if its CUDA does not start")
    elif model.device not in ("cuda", "cuda:0"):
        raise UsageError(
            f"--device {model.device}: the workers have one GPU ({accelerator.type}, from {accelerator.flag}); "
            "leave --device out (it is cuda there), or drop the accelerator to score on CPUs"
        )
    one_process = ONE_SDK_PROCESS in (debug.experiments or [])
    if not one_process and not model.share_model_across_processes:
        model = dataclasses.replace(model, share_model_across_processes=True)
        beam_args.append("--share_model_across_processes")
        notes.append(
            "--share_model_across_processes: Dataflow runs one SDK process per vCPU; they share one model on the GPU"
        )
    if debug.number_of_worker_harness_threads is None:
        threads = THREADS_IN_ONE_SDK_PROCESS if one_process else THREADS_PER_SDK_PROCESS
        beam_args += ["--number_of_worker_harness_threads", str(threads)]
        notes.append(f"--number_of_worker_harness_threads {threads}: bundles in flight per SDK process on GPU workers")
    return WorkerDefaults(tuple(beam_args), model, tuple(notes))


def _check_accelerator(accelerator: Accelerator, machine_type: Optional[str]) -> None:
    where = f"{accelerator.flag} (worker_accelerator type:{accelerator.type})"
    if not accelerator.install_driver:
        raise UsageError(
            f"{where}: add ;install-nvidia-driver, or Dataflow installs no NVIDIA driver and CUDA cannot start"
        )
    if accelerator.count != 1:
        raise UsageError(
            f"{where}: count:{accelerator.count}; this job puts one model on one GPU per worker, so more GPUs would "
            "sit idle: use count:1 and let Dataflow add workers (--max_num_workers)"
        )
    families = MACHINE_FAMILIES.get(accelerator.type)
    if machine_type and families and not machine_type.startswith(families):
        example = {"g2-": "g2-standard-8", "n1-": "n1-standard-8"}.get(families[0], families[0] + "1g")
        allowed = " or ".join(family + "*" for family in families)
        raise UsageError(
            f"--machine_type {machine_type}: {accelerator.type} GPUs attach to {allowed} machine types only, "
            f"e.g. --machine_type {example}"
        )
