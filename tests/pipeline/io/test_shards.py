"""Scored WebDataset samples written as new shards: exactly the samples given, in a fixed order, cut into shards
of the size asked, every member byte for byte; the same samples give the same bytes."""

import io
import json
import math
import tarfile
import time

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.io.shards import WriteShards, shard_path
from pipeline.io.webdataset import OFFSET_KEY, ReadWebDataset, SampleLayout, read_shard
from tests.support.cli import run_job
from transforms.outputs import OutputFields
from transforms.testing.captions import CAPTIONS
from transforms.testing.datasets import img2dataset_sample, jpeg, shard_bytes, write_shard

OUTPUTS = OutputFields()


def _shards(root, shards=3, samples=5) -> list[tuple[str, str, list[tuple[str, bytes]]]]:
    """img2dataset shards with members the reader skips; returns (shard path, key, members) of every sample."""
    samples_written = []
    for shard in range(shards):
        members = []
        for index in range(samples):
            key = f"{shard:05d}{index:04d}"
            sample = img2dataset_sample(key, None, f"caption {key}")
            sample[1:1] = [(f"{key}.jpg", f"jpeg {key}".encode() * 50), (f"{key}.seg.png", bytes([shard, index]) * 700)]
            members += sample
            samples_written.append((str(root / f"{shard:05d}.tar"), key, sample))
        write_shard(root / f"{shard:05d}.tar", members)
    return samples_written


def _score(record: dict) -> dict:
    """Made-up scores, a function of the key; every third sample failed."""
    number = int(record["__key__"])
    failed = number % 3 == 0
    reason = "image_undecodable" if failed else None
    return {
        **record,
        OUTPUTS.score: 0.0 if failed else (number * 37 % 100) / 100,
        OUTPUTS.reason: reason,
        OUTPUTS.error: f"{reason}: made up" if failed else None,
        OUTPUTS.truncated: False,
    }


def _kept(record: dict) -> bool:
    return record[OUTPUTS.reason] is None and record[OUTPUTS.score] >= 0.3


def _write(records, prefix, samples_per_shard, dead_letters=None) -> None:
    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        if isinstance(records, str):  # a shard pattern
            records = pipeline | ReadWebDataset(records, SampleLayout(with_offsets=True))
            records = records.records | beam.Map(_score) | beam.Filter(_kept)
        else:
            records = pipeline | beam.Create(records)
        dead = records | WriteShards(prefix, OUTPUTS, samples_per_shard)
        assert_that(dead, equal_to(dead_letters or []))


def _members(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as archive:
        return [(member.name, archive.extractfile(member).read()) for member in archive]


def test_kept_samples_become_shards_of_the_size_asked_members_byte_for_byte(tmp_path):
    written = _shards(tmp_path / "in")
    _write(str(tmp_path / "in" / "*.tar"), str(tmp_path / "out" / "kept"), samples_per_shard=4)

    scores = {key: _score({"__key__": key}) for _, key, _ in written}
    kept = [(path, key, sample) for path, key, sample in written if _kept(scores[key])]
    assert 4 < len(kept) < len(written) and len(kept) % 4, "shards cut across source shards, the last one short"
    paths = sorted((tmp_path / "out").iterdir())
    assert [path.name for path in paths] == [f"kept-{index:05d}.tar" for index in range(math.ceil(len(kept) / 4))]
    assert str(paths[0]) == shard_path(str(tmp_path / "out" / "kept"), 0)

    expected = []
    for _, key, sample in kept:
        for name, data in sample:
            if name.endswith(".json"):
                added = {name: scores[key][name] for name in OUTPUTS.names}
                data = json.dumps({**json.loads(data), **added}).encode()  # img2dataset's JSON, the fields after
            expected.append((name, data))
    got = [member for path in paths for member in _members(path)]
    assert got == expected
    assert [len({name.split(".")[0] for name, _ in _members(path)}) for path in paths][:-1] == [4] * (len(paths) - 1)

    # The project's reader reads them back as the kept samples, scores included.
    records = []
    for path in paths:
        data = path.read_bytes()
        records += [r for r in read_shard(io.BytesIO(data), len(data), str(path), SampleLayout()) if "__key__" in r]
    assert [r["__key__"] for r in records] == [key for _, key, _ in kept]
    assert [r[OUTPUTS.score] for r in records] == [scores[key][OUTPUTS.score] for _, key, _ in kept]
    assert all(r["text"] == f"caption {r['__key__']}" for r in records)


def test_the_same_samples_in_any_order_give_the_same_bytes(tmp_path):
    written = _shards(tmp_path / "in")
    _write(str(tmp_path / "in" / "*.tar"), str(tmp_path / "a" / "kept"), samples_per_shard=2)
    records = []
    for path in dict.fromkeys(path for path, _, _ in written):
        data = open(path, "rb").read()
        records += [_score(r) for r in read_shard(io.BytesIO(data), len(data), path, SampleLayout(with_offsets=True))]
    records = [record for record in records if _kept(record)][::-1]  # the other way round
    _write(records, str(tmp_path / "b" / "kept"), samples_per_shard=2)
    first, second = sorted((tmp_path / "a").iterdir()), sorted((tmp_path / "b").iterdir())
    assert [path.name for path in first] == [path.name for path in second] and len(first) > 1
    assert [path.read_bytes() for path in first] == [path.read_bytes() for path in second]


def test_no_sample_gives_one_empty_shard(tmp_path):
    _write([], str(tmp_path / "out" / "kept"), samples_per_shard=10)
    (path,) = (tmp_path / "out").iterdir()
    assert path.name == "kept-00000.tar" and _members(path) == [] and path.read_bytes() == bytes(tarfile.RECORDSIZE)


def test_members_that_cannot_be_copied_are_dead_letters(tmp_path):
    members = [("000001.jpg", b"one"), ("000001.txt", b"one"), ("000001.npy", b"sparse " * 200, "sparse-gnu")]
    members += [("000002.jpg", b"two"), ("000002.txt", b"two")]
    data, spans = shard_bytes(members)
    shard = tmp_path / "00000.tar"
    shard.write_bytes(data)
    records = [_score(r) for r in read_shard(io.BytesIO(data), len(data), str(shard), SampleLayout(with_offsets=True))]
    message = "member 000001.npy of sample 000001 is a GNU sparse file, whose stored bytes are not its content: "
    raw = {"__url__": str(shard), "__key__": "000001", "offset": spans[2].start, "members": ["000001.npy"]}
    entry = {
        "source": str(shard),
        "reason": "tar_member_not_copied",
        "error": message + f"it was not copied into {tmp_path / 'out' / 'kept-00000.tar'}",
        "raw": json.dumps(raw),
        "raw_base64": None,
        "message_id": None,
        "attributes": None,
    }
    _write(records, str(tmp_path / "out" / "kept"), samples_per_shard=10, dead_letters=[entry])
    names = [name for name, _ in _members(tmp_path / "out" / "kept-00000.tar")]
    assert names == ["000001.jpg", "000001.txt", "000001.json", "000002.jpg", "000002.txt", "000002.json"]


def test_records_that_do_not_say_where_their_sample_is_are_refused(tmp_path):
    record = _score({"__key__": "000001", "__url__": "s.tar"})
    with pytest.raises(Exception, match="a record without '__offset__': WriteShards takes the records of"):
        _write([record], str(tmp_path / "kept"), samples_per_shard=1)
    assert OFFSET_KEY == "__offset__"


@pytest.mark.slow
def test_a_top_fraction_job_writes_the_kept_and_the_rejected_samples_as_shards(
    tmp_path, longclip_checkpoint, good_images
):
    images = [jpeg(path) for name, path in sorted(good_images.items()) if name.endswith((".png", ".jpg"))]
    originals = {}
    for shard in range(3):
        members = []
        for index in range(5):
            key = f"{shard:05d}{index:04d}"
            image = None if (shard, index) == (1, 2) else images[(shard * 5 + index) % len(images)]
            sample = img2dataset_sample(key, image, CAPTIONS[sorted(CAPTIONS)[(shard + 2 * index) % len(CAPTIONS)]])
            sample += [(f"{key}.seg.png", bytes([shard, index]) * 333), (f"{key}.npy", bytes(range(256)) * 4)]
            members += sample
            originals[key] = sample
        write_shard(tmp_path / "in" / f"{shard:05d}.tar", members)
    done = run_job(
        *["--input", str(tmp_path / "in" / "*.tar"), "--output", str(tmp_path / "out" / "kept")],
        *["--model", str(longclip_checkpoint), "--keep_top_fraction", "0.3", "--output_format", "webdataset"],
        *["--samples_per_shard", "2"],
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    kept, rejected = _samples_in(tmp_path / "out", "kept-*.tar"), _samples_in(tmp_path / "out", "kept.rejected-*.tar")
    assert sorted([*kept, *rejected]) == sorted(originals) and not set(kept) & set(rejected)
    for key, members in {**kept, **rejected}.items():
        assert [name for name, _ in members] == [name for name, _ in originals[key]], key
        for (name, data), (_, original) in zip(members, originals[key], strict=True):
            if name.endswith(".json"):
                assert data.startswith(original[:-1]) and json.loads(data).items() >= json.loads(original).items()
            else:
                assert data == original, name
    meta = {key: json.loads(dict(members)[f"{key}.json"]) for key, members in {**kept, **rejected}.items()}
    scored = sorted((m[OUTPUTS.score] for m in meta.values() if m[OUTPUTS.reason] is None), reverse=True)
    assert len(scored) == 14 and meta["000010002"][OUTPUTS.reason] == "image_missing"
    cutoff = scored[math.ceil(0.3 * len(scored)) - 1]
    assert len(kept) == math.ceil(0.3 * len(scored)) == 5
    assert all(meta[key][OUTPUTS.reason] is None and meta[key][OUTPUTS.score] >= cutoff for key in kept)
    assert all(meta[key][OUTPUTS.cutoff] == cutoff for key in rejected) and "000010002" in rejected
    assert list(kept) == sorted(kept) and list(rejected) == sorted(rejected), "shard by shard, in the shards' order"
    assert [path.name for path in sorted((tmp_path / "out").glob("kept-*.tar"))] == [
        "kept-00000.tar", "kept-00001.tar", "kept-00002.tar",
    ]  # fmt: skip
    assert "Filter: 5 kept, 10 rejected" in done.stderr and "webdataset_shards_written: 8" in done.stderr
    assert "go to " + str(tmp_path / "out" / "kept") + "-*.tar files" in done.stderr
    assert not list((tmp_path / "out").glob("*.tmp")) and not list((tmp_path / "out").glob("*.jsonl"))[1:]


def _samples_in(folder, pattern) -> dict[str, list[tuple[str, bytes]]]:
    """The samples of the shards matching `pattern`, read with the project's reader, then with tarfile."""
    samples = {}
    for path in sorted(folder.glob(pattern)):
        data = path.read_bytes()
        records = list(read_shard(io.BytesIO(data), len(data), str(path), SampleLayout()))
        assert all("__key__" in record and "longclip_score" in record for record in records)
        members = _members(path)
        for record in records:
            samples[record["__key__"]] = [(name, body) for name, body in members if name.startswith(record["__key__"])]
    return samples


@pytest.mark.slow
def test_tables_beside_the_shards_get_the_samples_own_fields(
    tmp_path, bigquery_emulator, restore_environ, longclip_checkpoint, good_images
):
    """Where a sample starts in its shard is for the shard writer: rows in BigQuery tables do not carry it."""
    from pipeline import run, summarize
    from pipeline.io import bigquery as bq_sink
    from transforms.testing.emulators import GCP_PROJECT

    restore_environ[bq_sink.EMULATOR_HOST_VARIABLE] = bigquery_emulator
    client = bq_sink.client(GCP_PROJECT)
    name = client.create_dataset(f"shards_{time.monotonic_ns()}").dataset_id
    members = []
    for index, image in enumerate(("rgb.png", "grey.png", "rgb.jpg", "cmyk.jpg")):
        members += img2dataset_sample(f"00000{index:04d}", jpeg(good_images[image]), f"caption {index}")
    write_shard(tmp_path / "in" / "00000.tar", members)
    argv = ["--input", str(tmp_path / "in" / "*.tar"), "--output", str(tmp_path / "out" / "kept")]
    argv += ["--output_format", "webdataset", "--output_table", f"{name}.kept", "--project", GCP_PROJECT]
    counts = summarize(run([*argv, "--model", str(longclip_checkpoint), "--keep_top_fraction", "0.5"]))
    assert (counts["kept"], counts["rejected"], counts["webdataset_samples_written"]) == (2, 2, 4)
    rows = [*client.list_rows(f"{GCP_PROJECT}.{name}.kept"), *client.list_rows(f"{GCP_PROJECT}.{name}.kept_rejected")]
    assert sorted(row["record"]["__key__"] for row in rows) == [f"00000{index:04d}" for index in range(4)]
    assert not any(OFFSET_KEY in row["record"] for row in rows)
    assert len(_members(tmp_path / "out" / "kept-00000.tar")) == len(
        _members(tmp_path / "out" / "kept.rejected-00000.tar")
    )


@pytest.mark.slow
def test_shards_on_gcs_to_shards_on_gcs(tmp_path, gcs_bucket):
    """Read from and written to `gs://` through Beam's FileSystems (a real GCS emulator); renamed when whole."""
    written = _shards(tmp_path / "in", shards=2, samples=3)
    for path in {path for path, _, _ in written}:
        gcs_bucket.blob(f"wds-in/{path.rsplit('/', 1)[1]}").upload_from_filename(path)
    _write("gs://longclip-test-bucket/wds-in/*.tar", "gs://longclip-test-bucket/wds-out/kept", samples_per_shard=2)
    names = sorted(blob.name for blob in gcs_bucket.list_blobs(prefix="wds-out/"))
    assert names == ["wds-out/kept-00000.tar", "wds-out/kept-00001.tar"]
    local = []
    for name in names:
        gcs_bucket.blob(name).download_to_filename(tmp_path / name.rsplit("/", 1)[1])
        local += _members(tmp_path / name.rsplit("/", 1)[1])
    kept = [sample for _, key, sample in written if _kept(_score({"__key__": key}))]
    assert [name for name, _ in local] == [name for sample in kept for name, _ in sample]
    assert [data for name, data in local if not name.endswith(".json")] == [
        data for sample in kept for name, data in sample if not name.endswith(".json")
    ]
