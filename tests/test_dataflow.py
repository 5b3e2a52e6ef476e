"""The job as Dataflow receives it, built offline with Beam's `--dry_run` (nothing is staged or submitted), and
the Dataflow packaging: the Flex Template metadata, its entry point and the SDK container's pins."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys

import pytest
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.internal import apiclient
from google.cloud.dataflow_v1beta3.types import JobType, TemplateMetadata

from pipeline import run
from pipeline.options import ScoreLongCLIPOptions
from tests.support.paths import REPO_ROOT

IMAGE = "us-docker.pkg.dev/p/r/longclip:1"
ACCELERATOR = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
DATAFLOW = [
    "--runner", "DataflowRunner", "--project", "test-project", "--region", "us-central1",
    "--temp_location", "gs://bucket/tmp", "--staging_location", "gs://bucket/staging",
    "--no_auth", "--dry_run=True",
    "--sdk_location", "container", "--sdk_container_image", IMAGE,
    "--dataflow_service_options", ACCELERATOR, "--machine_type", "g2-standard-8",
    "--experiments", "no_use_multiple_sdk_containers",
    "--model", "gs://bucket/longclip.pt",
]  # fmt: skip
STREAMING = [
    "--streaming", "--input_subscription", "projects/test-project/subscriptions/s",
    "--output_table", "test-project:ds.t", "--output", "gs://bucket/out",
    "--dead_letter_topic", "projects/test-project/topics/dead",
    "--share_model_across_processes", "--max_batch_duration_secs", "0.5",
    "--min_batch_size", "8", "--max_batch_size", "32", "--id_label", "id",
]  # fmt: skip


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


def _check_gpu_workers(job: apiclient.Job) -> dict:
    environment = _environment(job)
    assert environment["serviceOptions"] == [ACCELERATOR]
    assert "no_use_multiple_sdk_containers" in environment["experiments"]
    assert "use_multiple_sdk_containers" not in environment["experiments"]
    assert "use_runner_v2" in environment["experiments"]  # custom containers need Runner v2
    (pool,) = environment["workerPools"]
    assert pool["machineType"] == "g2-standard-8"
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
    assert options["model"] == "gs://bucket/longclip.pt" and options["sdk_container_image"] == IMAGE
    return options


def test_streaming_pubsub_to_bigquery_on_l4_gpus():
    job = _dry_run(DATAFLOW + STREAMING)
    assert job.proto.type == JobType.JOB_TYPE_STREAMING
    options = _check_gpu_workers(job)
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
    assert "WriteScored/WriteText/Write/WriteImpl/WriteWindowedBundles" in transforms
    assert "WriteDeadLetter" not in transforms  # the topic takes the dead letter


def test_batch_files_to_files_on_l4_gpus(gcs_bucket):
    # Beam lists an input glob when the pipeline is built, so it must exist: on the local GCS emulator here.
    gcs_bucket.blob("in/captions.jsonl").upload_from_string('{"image_path": "a.png", "text": "a cat"}\n')
    pattern = f"gs://{gcs_bucket.name}/in/*.jsonl"
    job = _dry_run(DATAFLOW + ["--input", pattern, "--output", "gs://bucket/out/part", "--max_batch_size", "64"])
    assert job.proto.type == JobType.JOB_TYPE_BATCH
    options = _check_gpu_workers(job)
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


def test_flex_template_entry_point_builds_the_dataflow_job():
    """Runs the file the Flex Template launcher runs, with parameters as `--name=value`, in dry-run mode."""
    argv = DATAFLOW + [
        "--input_subscription=projects/test-project/subscriptions/s",
        "--output_table=test-project:ds.t",
        "--share_model_across_processes=true",
        "--max_batch_duration_secs=0.5",
        "--id_label=id",
    ]
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "dataflow/flex_template_main.py"), *argv],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


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
    """The Dockerfile's filter of requirements.txt, run here: every runtime pin but Beam and torch stays."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    (pattern,) = re.findall(r"grep -v -E '([^']+)'", dockerfile)
    done = subprocess.run(
        ["grep", "-v", "-E", pattern, str(REPO_ROOT / "requirements.txt")], capture_output=True, text=True, check=True
    )
    kept = {re.split(r"[=\[<>!~ ]", line.strip())[0].lower() for line in done.stdout.splitlines()}
    kept.discard("")
    kept = {name for name in kept if not name.startswith("#")}
    assert kept == set(_requirement_pins()) - {
        "apache-beam", "torch", "torchvision", "pytest", "hypothesis", "transformers", "ruff", "gcp-storage-emulator",
    }  # fmt: skip
