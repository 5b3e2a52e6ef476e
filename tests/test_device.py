"""Device choice: CUDA when there is one, and asking for a missing one is an error, never a silent CPU run."""

import pytest
import torch

from transforms import InvalidSetting, check_device, pick_device


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
    from transforms.model.device import resolve_precision

    fast = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    precision, why = resolve_precision("auto", torch.device("cpu"))
    assert precision == ("bf16" if fast else "fp32") and why.startswith("auto: this CPU has")
    assert resolve_precision("fp16", torch.device("cpu")) == ("fp16", "as requested")
    with pytest.raises(InvalidSetting, match="precision: must be one of fp32, bf16, fp16"):
        resolve_precision("int8", torch.device("cpu"))
