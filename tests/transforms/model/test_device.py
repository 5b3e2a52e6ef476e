"""Device choice: CUDA when there is one, and asking for a missing one is an error, never a silent CPU run."""

import pytest
import torch

from transforms import InvalidSetting
from transforms.model import device
from transforms.model.device import (
    check_device,
    cuda_problem,
    gpu_precision,
    nvidia_driver_version,
    pick_device,
    resolve_precision,
)


def test_missing_cuda_is_an_error_not_a_silent_cpu_run():
    if torch.cuda.is_available():
        assert pick_device(None).type == "cuda"
    else:
        assert pick_device(None).type == "cpu"
        with pytest.raises(InvalidSetting, match="device: 'cuda' was requested but CUDA is not available here"):
            pick_device("cuda")


def test_a_name_that_is_no_device_is_refused_before_any_worker_starts():
    check_device("cuda:1")  # a valid name, whether or not this machine has it
    with pytest.raises(InvalidSetting, match="device: 'gpu' is not a torch device; pass cpu, cuda or cuda:N"):
        check_device("gpu")


def test_auto_precision_picks_bf16_only_where_the_cpu_has_bf16_instructions():
    fast = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    precision, why = resolve_precision("auto", torch.device("cpu"))
    assert precision == ("bf16" if fast else "fp32") and why.startswith("auto: this CPU has")
    assert resolve_precision("fp16", torch.device("cpu")) == ("fp16", "as requested")
    with pytest.raises(InvalidSetting, match="precision: must be one of fp32, bf16, fp16"):
        resolve_precision("int8", torch.device("cpu"))


@pytest.mark.parametrize(
    "name, capability, precision",
    [
        ("NVIDIA H100 80GB HBM3", (9, 0), "bf16"),
        ("NVIDIA L4", (8, 9), "bf16"),
        ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16"),
        ("Tesla T4", (7, 5), "fp16"),
        ("Tesla V100-SXM2-16GB", (7, 0), "fp16"),
        ("Tesla P100-PCIE-16GB", (6, 0), "fp32"),
    ],
)
def test_auto_precision_on_gpus(name, capability, precision):
    chosen, why = gpu_precision(name, capability)
    assert chosen == precision and name in why and f"{capability[0]}.{capability[1]}" in why


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_a_missing_gpu_fails_loudly_with_the_reason():
    with pytest.raises(InvalidSetting) as failed:
        pick_device("cuda")
    reason = cuda_problem()
    assert reason in str(failed.value) and reason  # e.g. no NVIDIA driver, or a CPU-only torch build
    assert "CUDA" in reason or "CPU-only" in reason


def test_nvidia_driver_version_read_from_proc(tmp_path, monkeypatch):
    version_file = tmp_path / "version"
    version_file.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.90.07  Fri May 31 09:35:42 UTC 2024\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    monkeypatch.setattr(device, "_NVIDIA_DRIVER_VERSION_FILE", version_file)
    assert nvidia_driver_version() == "550.90.07"
    monkeypatch.setattr(device, "_NVIDIA_DRIVER_VERSION_FILE", tmp_path / "absent")
    assert nvidia_driver_version() is None
