"""The job's flags come from one declaration each: `--help`, the table of docs/flags.md and the Flex
Template agree."""

import dataclasses
import json
import subprocess
import sys

import pytest
from google.cloud.dataflow_v1beta3.types import TemplateMetadata

from pipeline.cli import declarations, generated, kit
from pipeline.cli.command import argument_parser
from tests.support.paths import REPO_ROOT
from transforms import BatchSettings, ImageSettings, InvalidSetting, ModelSettings
from transforms.settings import SETTINGS_CLASSES


def test_help_lists_every_declared_flag_without_importing_torch_or_beam():
    code = (
        "import sys\n"
        "from pipeline.__main__ import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
        "heavy = sorted(m for m in ('torch', 'apache_beam', 'open_clip') if m in sys.modules)\n"
        "print('IMPORTED', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stdout
    declared = {f"--{field.name}" for _, field, _, _ in kit.declared_flags(declarations.GROUPS)}
    shown = {word for word in done.stdout.split() if word.startswith("--") and word.strip(",") == word}
    assert declared <= shown, declared - shown
    every_setting = {f"--{field.name}" for cls in SETTINGS_CLASSES for field in dataclasses.fields(cls)}
    assert every_setting <= declared


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--input", "x", "--output", "y", "--device", "tpu"], "--device: 'tpu' is not a torch device"),
        (["--input", "x", "--output", "y", "--max_batchsize", "8"], "unknown flag(s) --max_batchsize"),
    ],
)
def test_flag_errors_come_before_torch_is_imported(argv, message):
    """Beam's own options are checked too (unknown flags), but nothing that loads a model is imported."""
    code = (
        "import sys\n"
        "from pipeline.__main__ import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exit:\n    assert exit.code == 2\n"
        "print('IMPORTED', sorted(m for m in ('torch', 'open_clip', 'pipeline.job') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stdout and message in done.stderr


def test_flag_table_and_flex_template_are_generated_from_the_declarations():
    page = (REPO_ROOT / generated.FLAGS_PAGE).read_text(encoding="utf-8")
    assert generated.with_table(page) == page, f"run `make generated` and commit {generated.FLAGS_PAGE}"
    text = (REPO_ROOT / generated.FLEX_TEMPLATE_METADATA).read_text(encoding="utf-8")
    assert text == generated.flex_template_json(), "run `make generated` and commit the Flex Template metadata"
    TemplateMetadata.from_json(text)  # Dataflow's own schema: unknown fields or bad enum values fail here
    parameters = {p["name"]: p for p in json.loads(text)["parameters"]}
    assert set(parameters) == {field.name for _, field, _, _ in kit.declared_flags(declarations.GROUPS)}
    assert [option["value"] for option in parameters["precision"]["enumOptions"]] == ["fp32", "bf16", "fp16", "auto"]
    assert {"device", "precision", "max_concurrent_batches", "image_resolution", "context_length"} <= set(parameters)
    assert parameters["share_model_across_processes"]["defaultValue"] == "false"


def test_settings_built_from_flags_equal_the_library_defaults():
    namespace = argument_parser().parse_args(["--input", "x", "--output", "y"])
    built = declarations.settings_from(namespace)
    assert built == {cls: cls() for cls in SETTINGS_CLASSES}
    namespace = argument_parser().parse_args(["--input", "x", "--output", "y", "--max_batch_size", "64"])
    assert declarations.settings_from(namespace)[BatchSettings] == BatchSettings(max_batch_size=64)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ModelSettings(precision="int8"), "precision: must be one of fp32, bf16, fp16, auto, got 'int8'"),
        (lambda: ModelSettings(image_resolution=336), "context_length: give image_resolution and context_length"),
        (lambda: ModelSettings(max_concurrent_batches=0), "max_concurrent_batches: must be at least 1, got 0"),
        (lambda: ModelSettings(model=" "), "model: is empty"),
        (lambda: ModelSettings(model_copies=0), "model_copies: must be at least 1"),
        (lambda: BatchSettings(max_batch_duration_secs=0), "max_batch_duration_secs: must be more than 0"),
        (lambda: BatchSettings(max_batch_size=2.5), "max_batch_size: must be a whole number"),
        (lambda: ImageSettings(max_image_bytes=-1), "max_image_bytes: must be at least 1, got -1"),
        (lambda: ImageSettings(http_timeout_secs=float("nan")), "http_timeout_secs: must be a number"),
    ],
)
def test_library_settings_name_the_argument_not_a_flag(make, message):
    with pytest.raises(InvalidSetting) as caught:
        make()
    assert str(caught.value) == message or str(caught.value).startswith(message)
    assert "--" not in str(caught.value)
