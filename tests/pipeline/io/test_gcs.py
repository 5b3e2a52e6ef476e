"""gs:// images, models, inputs and outputs through Beam FileSystems, against a real GCS emulator."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.support.paths import REPO_ROOT
from tests.support.reference_longclip import reference_score
from transforms import ImageSettings, reasons
from transforms.inputs.fetch import read_image_bytes
from transforms.inputs.prepare import PairPreparer
from transforms.model.locate import resolve_checkpoint
from transforms.reasons import InputError


def test_gs_images_equal_local_ones(gcs_bucket, good_images):
    gcs_bucket.blob("images/rgb.png").upload_from_filename(good_images["rgb.png"])
    preparer = PairPreparer(image_resolution=32, context_length=248)
    local = preparer.load_image({"image_path": str(good_images["rgb.png"])}).pixels
    assert torch.equal(preparer.load_image({"image_path": "gs://longclip-test-bucket/images/rgb.png"}).pixels, local)
    rooted = PairPreparer(
        image_resolution=32, context_length=248, images=ImageSettings(image_root="gs://longclip-test-bucket/images")
    )
    assert torch.equal(rooted.load_image({"image_path": "rgb.png"}).pixels, local)
    try:
        preparer.load_image({"image_path": "gs://longclip-test-bucket/images/missing.png"})
    except InputError as error:
        assert error.reason == reasons.IMAGE_NOT_FOUND
    else:
        raise AssertionError("a missing gs:// object must be image_not_found")


def test_gs_model_is_copied_once_into_the_cache(gcs_bucket, longclip_checkpoint, tmp_path):
    gcs_bucket.blob("models/longclip-tiny.pt").upload_from_filename(longclip_checkpoint)
    uri = "gs://longclip-test-bucket/models/longclip-tiny.pt"
    cached = resolve_checkpoint(uri, cache_dir=str(tmp_path))
    assert cached.read_bytes() == longclip_checkpoint.read_bytes()
    first_copy = cached.stat().st_mtime_ns
    # A fresh process (another SDK worker) reuses the copy instead of downloading again.
    code = (
        "import sys; from transforms.model.locate import resolve_checkpoint; "
        "print(resolve_checkpoint(sys.argv[1], sys.argv[2]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, uri, str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()) == cached and cached.stat().st_mtime_ns == first_copy


def test_pipeline_reads_and_writes_gs(gcs_bucket, longclip_checkpoint, longclip_state_dict, good_images, tmp_path):
    gcs_bucket.blob("job/model/longclip-tiny.pt").upload_from_filename(longclip_checkpoint)
    gcs_bucket.blob("job/images/rgb.jpg").upload_from_filename(good_images["rgb.jpg"])
    lines = [
        {"image_path": "rgb.jpg", "text": "a long caption " * 30},
        {"image_path": "missing.jpg", "text": "a cat"},
    ]
    gcs_bucket.blob("job/in.jsonl").upload_from_string("\n".join(json.dumps(line) for line in lines) + "\n{broken\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "--input",
            "gs://longclip-test-bucket/job/in*.jsonl",
            "--output",
            "gs://longclip-test-bucket/job/out/scored",
            "--image_root",
            "gs://longclip-test-bucket/job/images",
            "--model",
            "gs://longclip-test-bucket/job/model/longclip-tiny.pt",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LONGCLIP_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    blobs = {blob.name: blob for blob in gcs_bucket.list_blobs(prefix="job/out/")}
    scored = [
        json.loads(line)
        for name, blob in blobs.items()
        if name.startswith("job/out/scored-")
        for line in blob.download_as_text().splitlines()
    ]
    dead = [
        json.loads(line)
        for name, blob in blobs.items()
        if name.startswith("job/out/scored.dead_letter-")
        for line in blob.download_as_text().splitlines()
    ]
    assert len(scored) == 2 and len(dead) == 1 and dead[0]["reason"] == "not_json"
    by_path = {record["image_path"]: record for record in scored}
    expected = reference_score(longclip_state_dict, good_images["rgb.jpg"], lines[0]["text"])
    assert abs(by_path["rgb.jpg"]["longclip_score"] - expected) < 1e-6
    assert by_path["missing.jpg"]["longclip_score_error"].startswith("image_not_found")


def test_a_stalled_bucket_holds_a_read_only_until_its_deadline(gcs_emulator, gcs_bucket, good_images):
    """The emulator paused (SIGSTOP) takes connections and never answers, as an unreachable GCS does."""
    gcs_bucket.blob("stall/rgb.png").upload_from_filename(good_images["rgb.png"])
    uri = "gs://longclip-test-bucket/stall/rgb.png"
    os.kill(gcs_emulator.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(InputError) as caught:
            read_image_bytes(uri, timeout_secs=2)
        waited = time.monotonic() - started
    finally:
        os.kill(gcs_emulator.pid, signal.SIGCONT)
    assert caught.value.reason == reasons.IMAGE_TIMEOUT
    assert caught.value.message.startswith(f"{uri}: not read within the 2 s deadline")
    assert 2 <= waited < 3
    assert read_image_bytes(uri, timeout_secs=30) == good_images["rgb.png"].read_bytes()
