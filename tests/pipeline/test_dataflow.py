"""The job as Dataflow receives it, built offline with Beam's `--dry_run` (nothing is staged or submitted), and
the Dataflow packaging: the Flex Template metadata, its entry point and the SDK container's pins."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.internal import apiclient
from google.cloud.dataflow_v1beta3.types import JobType, TemplateMetadata

from pipeline import run
from pipeline.cli.options import ScoreLongCLIPOptions
from tests.support.paths import REPO_ROOT

IMAGE = "us-docker.pkg.dev/p/r/longclip:1"
ACCELERATOR = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
DATAFLOW = [
    "--runner", "DataflowRunner", "--project", "test-project", "--region", "us-central1",
    "--temp_location", "gs://bucket/tmp", "--staging_location", "gs://bucket/staging",
    "--no_auth", "--dry_run=True",
    "--sdk_location", "container", "--sdk_container_image", IMAGE,
    "--dataflow_service_options", ACCELERATOR, "--machine_type", "g2-standard-8",
]  # fmt: skip
MODEL_PATH = "dataflow/models/longclip-tiny.pt"
STREAMING = [
    "--streaming", "--input_subscription", "projects/test-project/subscriptions/s",
    "--output_table", "test-project:ds.t", "--output", "gs://bucket/out",
    "--dead_letter_topic", "projects/test-project/topics/dead",
    "--share_model_across_processes", "--max_batch_duration_secs", "0.5",
    "--min_batch_size", "8", "--max_batch_size", "32", "--id_label", "id",
]  # fmt: skip


@pytest.fixture(scope="module")
def model_uri(gcs_bucket, longclip_checkpoint) -> str:
    """The job reads the checkpoint's header when it is built (never the whole file): it must exist."""
    gcs_bucket.blob(MODEL_PATH).upload_from_filename(longclip_checkpoint)
    return f"gs://{gcs_bucket.name}/{MODEL_PATH}"


def _dry_run(argv: list[str]) -> apiclient.Job:
    """The Dataflow job `python -m pipeline argv` would submit: the runner stops before staging anything."""
    return run(argv, wait=True).job


def _environment(job: apiclient.Job) -> dict:
    """The job's `environment` (workers, service options, experiments), as the runner fills it in at submission.

    The dry run stops before this step, which stages the pipeline to GCS and asks for nothing else: here it is
    built by the same Beam class, from the same options and pipeline, with the staged pipeline's URL made up.
    """
    environment = apiclient.Environment(
        packages=[],
        options=job.options,
        environment_version=apiclient._FNAPI_ENVIRONMENT_MAJOR_VERSION,
        proto_pipeline_staged_url="gs://bucket/staging/pipeline.pb",
        proto_pipeline=job.proto_pipeline,
    ).proto
    return json.loads(type(environment).to_json(environment))


def _transforms(job: apiclient.Job) -> dict[str, beam_runner_api_pb2.PTransform]:
    return {t.unique_name: t for t in job.proto_pipeline.components.transforms.values()}


def _check_gpu_workers(job: apiclient.Job, model_uri: str) -> dict:
    """The GPU recipe: one SDK process per vCPU sharing one model on the GPU, CUDA, one thread per process,
    a boot disk that holds the image and the checkpoint."""
    environment = _environment(job)
    assert environment["serviceOptions"] == [ACCELERATOR]
    assert "use_multiple_sdk_containers" in environment["experiments"]
    assert "use_runner_v2" in environment["experiments"]  # custom containers need Runner v2
    (pool,) = environment["workerPools"]
    assert pool["machineType"] == "g2-standard-8"
    assert pool["diskSizeGb"] == 50 and pool["numThreadsPerWorker"] == 1
    assert pool["workerHarnessContainerImage"] == IMAGE
    assert {image["containerImage"] for image in pool["sdkHarnessContainerImages"]} == {IMAGE}

    (sdk_environment,) = job.proto_pipeline.components.environments.values()
    assert sdk_environment.urn == "beam:env:docker:v1"
    assert beam_runner_api_pb2.DockerPayload.FromString(sdk_environment.payload).container_image == IMAGE
    # Nothing for workers to install: no SDK tarball, no setup.py package, no requirements; the one artifact
    # is Beam's record of the launching environment's packages.
    staged = [
        beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(d.role_payload).staged_name
        for d in sdk_environment.dependencies
    ]
    assert staged == ["submission_environment_dependencies.txt"]

    options = environment["sdkPipelineOptions"]["options"]
    assert options["model"] == model_uri and options["sdk_container_image"] == IMAGE
    assert options["device"] == "cuda" and options["share_model_across_processes"]
    assert options["max_concurrent_batches"] == 1  # forward passes on the shared model, one at a time
    return options


def test_streaming_pubsub_to_bigquery_on_l4_gpus(model_uri):
    job = _dry_run(DATAFLOW + STREAMING + ["--model", model_uri])
    assert job.proto.type == JobType.JOB_TYPE_STREAMING
    options = _check_gpu_workers(job, model_uri)
    assert options["streaming"] and options["share_model_across_processes"]
    assert options["output_table"] == "test-project:ds.t" and "dead_letter_table" not in options
    assert options["max_batch_duration_secs"] == 0.5 and (options["min_batch_size"], options["max_batch_size"]) == (
        8,
        32,
    )
    assert "enable_streaming_engine" in _environment(job)["experiments"]

    transforms = _transforms(job)
    (read,) = [t for t in transforms.values() if t.spec.urn == "beam:transform:pubsub_read:v1"]
    assert transforms["ReadPubSub/ReadFromPubSub/Read"] is read
    payload = beam_runner_api_pb2.PubSubReadPayload.FromString(read.spec.payload)
    assert payload.subscription == "projects/test-project/subscriptions/s"
    assert payload.id_attribute == "id" and payload.with_attributes

    (publish,) = [t for t in transforms.values() if t.spec.urn == "beam:transform:pubsub_write:v1"]
    assert publish.unique_name.startswith("PublishDeadLetter/")
    assert beam_runner_api_pb2.PubSubWritePayload.FromString(publish.spec.payload).topic == (
        "projects/test-project/topics/dead"
    )

    # Batches fill across bundles (stateful BatchElements) when --max_batch_duration_secs is set.
    assert "ScoreLongCLIP/RunInference/BatchElements/ParDo(_StatefulBatchElementsDoFn)" in transforms
    assert "ScoreLongCLIP/RunInference/BeamML_RunInference" in transforms
    assert "WriteScoredToBigQuery/WriteToBigQuery/_StreamToBigQuery/StreamInsertRows/ParDo(BigQueryWriteFn)" in (
        transforms
    )
    assert "WriteScoredToBigQuery/WriteToBigQuery/_StreamToBigQuery/AddInsertIds" in transforms
    assert "WriteScored/WriteText/WriteImpl/WriteWindowedBundles" in transforms  # window-named files
    assert "WriteDeadLetter" not in transforms  # the topic takes the dead letter


def test_batch_files_to_files_on_l4_gpus(gcs_bucket, model_uri):
    # Beam lists an input glob when the pipeline is built, so it must exist: on the local GCS emulator here.
    gcs_bucket.blob("in/captions.jsonl").upload_from_string('{"image_path": "a.png", "text": "a cat"}\n')
    pattern = f"gs://{gcs_bucket.name}/in/*.jsonl"
    argv = ["--input", pattern, "--output", "gs://bucket/out/part", "--max_batch_size", "64", "--model", model_uri]
    job = _dry_run(DATAFLOW + argv)
    assert job.proto.type == JobType.JOB_TYPE_BATCH
    options = _check_gpu_workers(job, model_uri)
    assert options["input"] == pattern and not options.get("streaming")
    transforms = _transforms(job)
    assert not [t for t in transforms.values() if "pubsub" in t.spec.urn]
    assert not [name for name in transforms if "BigQuery" in name]
    for name in ("ReadJsonLines", "ScoreLongCLIP/RunInference/BeamML_RunInference", "WriteScored", "WriteDeadLetter"):
        assert name in transforms, sorted(transforms)


def _load_flex_main():
    spec = importlib.util.spec_from_file_location("flex_template_main", REPO_ROOT / "dataflow/flex_template_main.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flex_template_entry_point_takes_switches_as_the_launcher_passes_them():
    launcher_argv = _load_flex_main().launcher_argv
    assert launcher_argv(
        ["--input_subscription=projects/p/subscriptions/s", "--share_model_across_processes=true"]
    ) == [
        "--input_subscription=projects/p/subscriptions/s",
        "--share_model_across_processes",
        "--streaming",
    ]
    assert launcher_argv(["--input=gs://b/x", "--share_model_across_processes=false", "--model=gs://b/m.pt"]) == [
        "--input=gs://b/x",
        "--model=gs://b/m.pt",
    ]
    assert launcher_argv(["--streaming=True", "--input_topic=projects/p/topics/t"]) == [
        "--streaming",
        "--input_topic=projects/p/topics/t",
    ]
    with pytest.raises(SystemExit):
        launcher_argv(["--share_model_across_processes=maybe"])


def test_flex_template_entry_point_builds_the_dataflow_job(model_uri):
    """Runs the file the Flex Template launcher runs, with parameters as `--name=value`, in dry-run mode."""
    argv = DATAFLOW + [
        "--input_subscription=projects/test-project/subscriptions/s",
        "--output_table=test-project:ds.t",
        "--max_batch_duration_secs=0.5",
        "--id_label=id",
        f"--model={model_uri}",
    ]
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "dataflow/flex_template_main.py"), *argv],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},  # this checkout's package, as the image installs it
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # GPU defaults applied by the job itself, so the template needs no parameter for them.
    for note in ("--device cuda", "--share_model_across_processes", "--number_of_worker_harness_threads 1"):
        assert f"Dataflow workers: {note}" in done.stderr, done.stderr[-3000:]


def _job_flags() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    ScoreLongCLIPOptions._add_argparse_args(parser)
    return {action.dest: action for action in parser._actions if action.dest != "help"}


def test_flex_template_metadata_names_the_job_flags():
    text = (REPO_ROOT / "dataflow/flex_template_metadata.json").read_text()
    TemplateMetadata.from_json(text)  # Dataflow's own schema: unknown fields or bad enum values fail here
    parameters = {p["name"]: p for p in json.loads(text)["parameters"]}
    flags = _job_flags()
    assert set(parameters) <= set(flags), set(parameters) - set(flags)
    assert set(parameters) >= {
        "input_subscription", "input_topic", "input", "output", "output_table", "dead_letter",
        "dead_letter_topic", "dead_letter_table", "window_seconds", "model", "precision", "attributes_key",
        "id_label", "timestamp_attribute", "min_batch_size", "max_batch_size", "max_batch_duration_secs",
        "share_model_across_processes", "image_key", "text_key", "output_key", "image_root",
    }  # fmt: skip
    for name, parameter in parameters.items():
        assert parameter["label"] and parameter["helpText"] and parameter["isOptional"], name
        action = flags[name]
        if "defaultValue" in parameter:
            default = parameter["defaultValue"]
            if isinstance(action, argparse._StoreTrueAction):
                assert default == "false" and action.default is False
            else:
                assert (action.type or str)(default) == action.default, name
        if action.choices:
            assert {o["value"] for o in parameter["enumOptions"]} == set(action.choices)
    examples = {
        "input_subscription": "projects/test-project/subscriptions/s",
        "input_topic": "projects/test-project/topics/t",
        "dead_letter_topic": "projects/test-project/topics/dead",
        "output_table": "test-project:ds.t",
        "dead_letter_table": "test-project:ds.t_dead_letter",
        "input": "gs://bucket/in/*.jsonl",
        "output": "gs://bucket/out/part",
        "window_seconds": "60",
        "max_batch_duration_secs": "0.5",
        "max_batch_size": "32",
        "share_model_across_processes": "true",
        "precision": "bf16",
        "model": "gs://bucket/longclip.pt",
    }
    for name, value in examples.items():
        assert all(re.fullmatch(regex, value) for regex in parameters[name].get("regexes", [])), (name, value)
    assert not re.fullmatch(parameters["input_subscription"]["regexes"][0], "projects/p/topics/t")
    assert not re.fullmatch(parameters["share_model_across_processes"]["regexes"][0], "yes please")


def _requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==(\S+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


def test_dockerfile_pins_match_requirements():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    pins = _requirement_pins()
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert f"apache/beam_python{python}_sdk:{pins['apache-beam']}" in bases
    assert f"gcr.io/dataflow-templates-base/python{python.replace('.', '')}-template-launcher-base" in bases
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(pins['torch'])}$", dockerfile, re.MULTILINE)
    assert re.search(rf"^ARG TORCHVISION_VERSION={re.escape(pins['torchvision'])}$", dockerfile, re.MULTILINE)
    assert re.search(r"^ENTRYPOINT \[\"/opt/apache/beam/boot\"\]$", dockerfile, re.MULTILINE)


def test_dockerfile_installs_the_runtime_requirements_only():
    """requirements.txt is the runtime list, installed as it is; the tools of tests and lint are apart."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-cache-dir -r requirements.txt$", dockerfile, re.MULTILINE)
    assert "-r requirements-dev" not in dockerfile and "grep -v" not in dockerfile
    development = {"pytest", "hypothesis", "transformers", "ruff", "gcp-storage-emulator", "websockets"}
    assert not development & set(_requirement_pins())
    dev_text = (REPO_ROOT / "requirements-dev.txt").read_text()
    assert dev_text.splitlines()[1] == "-r requirements.txt"
    assert development <= {re.split(r"[=\[<>!~ ]", line)[0].lower() for line in dev_text.splitlines()}


def test_cloud_build_config_builds_with_enough_time_machine_and_credentials():
    import yaml

    config = yaml.safe_load((REPO_ROOT / "dataflow/cloudbuild.yaml").read_text())
    (step,) = config["steps"]
    assert step["args"][:2] == ["build", "--network=cloudbuild"]  # RUN steps may read gs:// with the build's account
    assert "MODEL=${_MODEL}" in step["args"] and config["images"] == ["${_IMAGE}"]
    assert int(config["timeout"].rstrip("s")) >= 1800 and config["options"]["machineType"].startswith("E2_HIGHCPU")
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG MODEL=$", dockerfile, re.MULTILINE)
    assert re.search(r"^ENV LONGCLIP_PRELOADED_DIR=/opt/longclip/preloaded$", dockerfile, re.MULTILINE)


def _readme_dataflow_blocks() -> list[str]:
    """The commands of docs/dataflow.md, where the README sends a user for Dataflow."""
    page = (REPO_ROOT / "docs" / "dataflow.md").read_text(encoding="utf-8")
    return [block.replace("\\\n", " ") for block in re.findall(r"```(?:bash|sh)\n(.*?)```", page, re.DOTALL)]


def _flex_run_argv(command: str) -> list[str]:
    """`gcloud dataflow flex-template run` as the launcher hands it to the template's program."""
    words = shlex.split(command)
    assert words[:4] == ["gcloud", "dataflow", "flex-template", "run"], words[:4]
    renamed = {"--region": "--region", "--temp-location": "--temp_location", "--worker-machine-type": "--machine_type"}
    renamed["--max-workers"] = "--max_num_workers"
    argv = ["--runner=DataflowRunner", "--project=my-project"]
    for flag, value in zip(words[5::2], words[6::2], strict=True):
        if flag == "--parameters":
            # gcloud splits KEY=VALUE pairs on commas; a value may itself hold '=' (the service option)
            argv += [f"--{pair}" for pair in value.split(",")]
        elif flag in renamed:
            argv.append(f"{renamed[flag]}={value}")
    return argv


def test_readme_dataflow_commands_build_the_job_they_describe(gcs_bucket, longclip_checkpoint):
    """The README's commands, as written, with `--dry_run=True`: GPU workers with CUDA, one shared model, a thread
    per SDK process, a 50 GB disk. Its bucket lives on the GCS emulator: the job reads the model's header and
    lists the input glob when it is built."""
    bucket = gcs_bucket.client.bucket("my-bucket")
    if not bucket.exists():
        bucket = gcs_bucket.client.create_bucket("my-bucket")
    bucket.blob("models/longclip-L@336px.pt").upload_from_filename(longclip_checkpoint)
    for name in ("captions/part-0.jsonl", "captions/smoke.jsonl"):
        bucket.blob(name).upload_from_string('{"image_path": "gs://my-bucket/images/a.png", "text": "a cat"}\n')
    blocks = _readme_dataflow_blocks()
    jobs = [shlex.split(block)[3:] for block in blocks if block.startswith("python -m pipeline")]
    (batch, streaming) = jobs
    smoke = batch + ["--input", "gs://my-bucket/captions/smoke.jsonl", "--num_workers", "1", "--max_num_workers", "1"]
    (flex,) = [_flex_run_argv(block.split("\n\n")[-1].strip()) for block in blocks if "flex-template run" in block]
    flex = _load_flex_main().launcher_argv([arg.replace("$IMAGE", IMAGE) for arg in flex])
    for argv, kind in ((batch, "batch"), (smoke, "batch"), (streaming, "streaming"), (flex, "streaming")):
        job = _dry_run(argv + ["--dry_run=True", "--no_auth"])
        environment = _environment(job)
        assert job.proto.type == (JobType.JOB_TYPE_STREAMING if kind == "streaming" else JobType.JOB_TYPE_BATCH)
        assert [o for o in environment["serviceOptions"] if "install-nvidia-driver" in o and "count:1" in o]
        (pool,) = environment["workerPools"]
        assert pool["machineType"] == "g2-standard-8" and pool["diskSizeGb"] == 50 and pool["numThreadsPerWorker"] == 1
        options = environment["sdkPipelineOptions"]["options"]
        assert options["device"] == "cuda" and options["share_model_across_processes"]
        assert options["model"] == "gs://my-bucket/models/longclip-L@336px.pt"
        assert options["max_num_workers"] >= 1
    assert _environment(_dry_run(smoke + ["--dry_run=True", "--no_auth"]))["workerPools"][0]["numWorkers"] == 1
