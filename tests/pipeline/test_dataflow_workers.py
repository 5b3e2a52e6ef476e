"""Dataflow worker settings filled in, or refused with the reason, before a job is submitted."""

import pytest

from pipeline import UsageError, parse
from pipeline.cli.declarations import settings_from
from pipeline.dataflow import Accelerator, find_accelerator
from pipeline.preflight import workers
from transforms import ModelSettings

L4 = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
BASE = [
    "--runner", "DataflowRunner", "--project", "test-project", "--region", "us-central1",
    "--temp_location", "gs://bucket/tmp", "--input", "gs://bucket/in.jsonl", "--output", "gs://bucket/out",
]  # fmt: skip


def _options(*extra):
    flags = parse(BASE + list(extra))
    options, model = workers(flags, settings_from(flags.job)[ModelSettings])
    return options, model, options.get_all_options()


def test_gpu_workers_get_cuda_one_shared_model_a_thread_cap_and_a_disk_that_fits():
    _, job, everything = _options("--dataflow_service_options", L4, "--machine_type", "g2-standard-8")
    assert job.device == "cuda" and job.share_model_across_processes
    assert everything["number_of_worker_harness_threads"] == 1 and everything["disk_size_gb"] == 50


def test_one_sdk_process_needs_no_sharing_and_gets_a_few_threads():
    _, job, everything = _options("--dataflow_service_options", L4, "--experiments", "no_use_multiple_sdk_containers")
    assert job.device == "cuda" and not job.share_model_across_processes
    assert everything["number_of_worker_harness_threads"] == 4


def test_what_the_user_gives_is_kept():
    _, job, everything = _options(
        "--dataflow_service_options", L4, "--disk_size_gb", "200", "--number_of_worker_harness_threads", "2",
        "--device", "cuda:0",
    )  # fmt: skip
    assert job.device == "cuda:0" and everything["disk_size_gb"] == 200
    assert everything["number_of_worker_harness_threads"] == 2


def test_cpu_workers_only_get_the_disk():
    _, job, everything = _options()
    assert job.device is None and not job.share_model_across_processes
    assert everything["disk_size_gb"] == 50 and everything["number_of_worker_harness_threads"] is None


def test_local_runs_are_left_alone(tmp_path, longclip_checkpoint):
    flags = parse(["--input", "x", "--output", "y", "--model", str(longclip_checkpoint)])
    options, _ = workers(flags, settings_from(flags.job)[ModelSettings])
    assert options.get_all_options()["disk_size_gb"] is None


@pytest.mark.parametrize(
    "extra",
    [
        ["--experiments", L4],  # a Flex Template's --additional-experiments
        ["--resource_hints", "accelerator=type:nvidia-l4;count:1;install-nvidia-driver"],
    ],
)
def test_accelerator_found_wherever_dataflow_takes_it(extra):
    options, job, _ = _options(*extra)
    assert find_accelerator(options) == Accelerator("nvidia-l4", 1, True, extra[0])
    assert job.device == "cuda" and job.share_model_across_processes


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--dataflow_service_options", "worker_accelerator=type:nvidia-l4;count:1"],
            "add ;install-nvidia-driver, or Dataflow installs no NVIDIA driver",
        ),
        (
            ["--dataflow_service_options", "worker_accelerator=type:nvidia-l4;count:2;install-nvidia-driver"],
            "count:2; this job puts one model on one GPU per worker",
        ),
        (
            ["--dataflow_service_options", L4, "--machine_type", "n1-standard-8"],
            "--machine_type n1-standard-8: nvidia-l4 GPUs attach to g2-* machine types only",
        ),
        (
            [
                "--dataflow_service_options",
                L4.replace("nvidia-l4", "nvidia-tesla-a100"),
                "--machine_type",
                "g2-standard-8",
            ],
            "e.g. --machine_type a2-highgpu-1g",
        ),
        (["--dataflow_service_options", L4, "--device", "cpu"], "--device cpu: the workers have one GPU (nvidia-l4"),
        (["--device", "cuda"], "--device cuda: no GPU is requested for the Dataflow workers"),
        (["--dataflow_service_options", "worker_accelerator=count:1"], "names no type"),
    ],
)
def test_combinations_that_cannot_work_are_refused_before_submission(extra, message):
    with pytest.raises(UsageError) as refused:
        _options(*extra)
    assert message in str(refused.value)
