"""WebDataset shards in img2dataset's layout: every sample comes out once, as a record or in a dead letter;
a damaged shard loses only the samples it cuts; scores and embeddings are exact end to end."""

import bz2
import gzip
import hashlib
import io
import itertools
import json
import lzma
import shutil
import subprocess
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipeline import run, summarize
from pipeline.io.webdataset import SampleLayout, Unreadable, read_shard
from tests.support.cli import run_job
from tests.support.reference_longclip import reference_score
from transforms.testing.captions import CAPTIONS
from transforms.testing.datasets import (
    BLOCK,
    MEMBER_STYLES,
    SPARSE_HOLE,
    img2dataset_sample,
    jpeg,
    pad,
    pax_records,
    raw_header,
    set_size,
    shard_bytes,
    with_checksum,
    write_shard,
)


def _read(path, **layout) -> tuple[list[dict], list[Unreadable]]:
    data = path.read_bytes()
    items = list(read_shard(io.BytesIO(data), len(data), str(path), SampleLayout(**layout)))
    return [i for i in items if isinstance(i, dict)], [i for i in items if isinstance(i, Unreadable)]


def test_members_group_into_samples_as_webdataset_groups_them(tmp_path, good_images):
    jpg, png = good_images["rgb.jpg"].read_bytes(), good_images["rgb.png"].read_bytes()
    members = [
        ("a/", b""),  # a folder entry, as `tar -c` writes one
        ("a/000001.jpg", jpg),
        ("a/000001.json", b'{"n": 1, "text": "from the json", "url": "https://x/1.jpg"}'),
        ("a/000001.txt", "caption one \N{CAT FACE}".encode()),
        ("b/000001.png", png),  # same file name, other folder: another sample
        ("b/000001.txt", b"caption b"),
        ("000002.JPG", jpg),
        ("000002.cls", b"3"),  # not read into the record
        ("000002.txt", b"\xef\xbb\xbfwith a byte-order mark"),
        ("000003.txt", b"no image"),
        ("000004.jpg", jpg),  # no caption
        ("000005.png", png),
        ("000005.jpg", jpg),  # jpg comes before png among the image extensions
        ("000005.txt", b"two images"),
        ("000006.jpg", jpg),
        ("000006.txt", b"first of two"),
        ("000006.jpg", png),  # the same key again, adjacent: a second sample
        ("000006.txt", b"second of two"),
        ("000007.jpg", jpg),
        ("000007.txt", b"seven"),
        ("000008.jpg", jpg),
        ("000008.txt", b"eight"),
        ("000007.txt", b"seven again"),  # the same key again, not adjacent: a sample of its own
        ("README", b"no extension: not a sample"),
        ("._000009.jpg", b"a macOS resource fork: not a sample"),
    ]
    write_shard(tmp_path / "00000.tar", members)
    samples, unreadable = _read(tmp_path / "00000.tar")
    assert unreadable == []
    keys = [s["__key__"] for s in samples]
    assert keys == ["a/000001", "b/000001", "000002", "000003", "000004", "000005", "000006", "000006"] + [
        "000007",
        "000008",
        "000007",
    ]
    by_key = {s["__key__"]: s for s in samples}
    first = by_key["a/000001"]
    assert first["text"] == "caption one \N{CAT FACE}" and first["n"] == 1 and first["url"] == "https://x/1.jpg"
    assert first["image_path"] == {"bytes": jpg, "path": "a/000001.jpg"} and first["__url__"] == str(
        tmp_path / "00000.tar"
    )
    assert by_key["b/000001"]["image_path"] == {"bytes": png, "path": "b/000001.png"}
    assert by_key["000002"]["image_path"]["path"] == "000002.JPG" and "cls" not in by_key["000002"]
    assert by_key["000002"]["text"] == "with a byte-order mark"
    assert "image_path" not in by_key["000003"] and "text" not in by_key["000004"]
    assert by_key["000005"]["image_path"]["path"] == "000005.jpg"
    assert [(s["image_path"]["bytes"], s["text"]) for s in samples[6:8]] == [
        (jpg, "first of two"),
        (png, "second of two"),
    ]
    assert samples[-1] == {"__key__": "000007", "__url__": str(tmp_path / "00000.tar"), "text": "seven again"}

    pngs_only, _ = _read(tmp_path / "00000.tar", image_extensions=("png",), image_key="img", text_key="caption")
    assert pngs_only[5]["img"]["path"] == "000005.png" and "img" not in pngs_only[0]
    assert pngs_only[0]["caption"] == "caption one \N{CAT FACE}"


def test_unreadable_members_dead_letter_their_sample_only(tmp_path, good_images):
    jpg = good_images["rgb.jpg"].read_bytes()
    members = [("000001.jpg", jpg), ("000001.txt", b"\xff\xfe latin-1 caf\xe9")]
    members += [("000002.jpg", jpg), ("000002.json", b"[1, 2]")]
    members += [("000003.jpg", jpg), ("000003.json", b"{broken")]
    members += [("000004.jpg", jpg), ("000004.json", b"")]
    members += [("000005.jpg", jpg), ("000005.txt", b"fine")]
    write_shard(tmp_path / "s.tar", members)
    samples, unreadable = _read(tmp_path / "s.tar")
    assert [s["__key__"] for s in samples] == ["000005"]
    assert [(u.reason, u.where["__key__"]) for u in unreadable] == [
        ("not_utf8", "000001"),
        ("not_object", "000002"),
        ("not_json", "000003"),
        ("not_json", "000004"),
    ]
    assert unreadable[0].error.startswith("000001.txt: ") and unreadable[0].where["members"] == members_of(members, 1)


def members_of(members, number):
    return [name for name, _ in members if name.startswith(f"{number:06d}.")]


def test_an_image_member_over_the_limit_is_read_only_far_enough_to_refuse_it(tmp_path, good_images):
    large = good_images["large_1800x1200.jpg"].read_bytes()
    write_shard(tmp_path / "s.tar", [("1.jpg", large), ("1.txt", b"big"), ("2.jpg", large[:50]), ("2.txt", b"x")])
    samples, _ = _read(tmp_path / "s.tar", max_image_bytes=100)
    assert [len(s["image_path"]["bytes"]) for s in samples] == [101, 50]


def _six_samples(tmp_path, good_images):
    members = []
    for number in range(6):
        members += img2dataset_sample(f"{number:06d}", good_images["rgb.jpg"].read_bytes(), f"caption {number}")
    offsets = write_shard(tmp_path / "good.tar", members)
    return (tmp_path / "good.tar").read_bytes(), offsets


def _damage(data: bytes, offsets: dict, case: str) -> bytes:
    if case == "cut inside a member":
        return data[: offsets["000003.jpg"] + 512 + 100]
    if case == "cut between members":
        return data[: offsets["000003.txt"]]
    if case == "no end-of-archive marker":
        return data[: offsets["000005.txt"] + 2 * 512]  # the last member's header and its one block of data
    if case in ("corrupt header inside a sample", "corrupt first header of a sample"):
        damaged = bytearray(data)
        at = offsets["000003.json" if case == "corrupt header inside a sample" else "000003.jpg"]
        damaged[at : at + 16] = b"\x07" * 16
        return bytes(damaged)
    if case == "not a tar":
        return b"this is a text file that was named .tar\n" * 40
    return b""


# What each damage keeps: the records read, the samples lost (dead-lettered), the dead letter's reason and range.
DAMAGE = {
    "cut inside a member": (["000000", "000001", "000002"], ["000003"], "tar_truncated", "000003.jpg"),
    "cut between members": (["000000", "000001", "000002"], ["000003"], "tar_truncated", "000003.txt"),
    "no end-of-archive marker": (["000000", "000001", "000002", "000003", "000004"], ["000005"], "tar_truncated", None),
    "corrupt header inside a sample": (
        ["000000", "000001", "000002", "000004", "000005"],
        ["000003"],
        "tar_corrupt",
        "000003.json",
    ),
    # The damaged header could have been a member of the sample before it or of the one after it: both are cut.
    "corrupt first header of a sample": (
        ["000000", "000001", "000004", "000005"],
        ["000002", "000003"],
        "tar_corrupt",
        "000003.jpg",
    ),
    "not a tar": ([], [], "tar_corrupt", None),
    "empty file": ([], [], "tar_truncated", None),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_shard_loses_only_the_samples_it_cuts_and_says_where(tmp_path, good_images, case):
    data, offsets = _six_samples(tmp_path, good_images)
    (tmp_path / "damaged.tar").write_bytes(_damage(data, offsets, case))
    samples, unreadable = _read(tmp_path / "damaged.tar")
    kept, lost, reason, damaged_member = DAMAGE[case]
    assert [s["__key__"] for s in samples] == kept
    assert all(s["text"] == f"caption {int(s['__key__'])}" for s in samples)
    assert all("image_path" in s for s in samples)
    (entry,) = unreadable
    assert entry.reason == reason and entry.where["__url__"] == str(tmp_path / "damaged.tar")
    assert sorted({sample["__key__"] for sample in entry.where["lost"]}) == lost
    if damaged_member:
        assert entry.where["offset"] == offsets[damaged_member]
    assert entry.where["end"] <= len((tmp_path / "damaged.tar").read_bytes())
    assert str(entry.where["offset"]) in entry.error


# Shards crafted byte by byte: every sample comes out once, as a record or listed in a dead letter, whatever the
# headers say; nothing is invented; reading always ends.
def _samples(count: int, styles=("ustar",), prefix: str = "") -> list:
    """`count` small samples (a jpg-named and a txt member each, unique bytes), written in the given styles."""
    members = []
    for number in range(count):
        key, style = f"{prefix}{number:06d}", styles[number % len(styles)]
        members += [
            (f"{key}.jpg", f"image {key} ".encode() * (20 + number), style),
            (f"{key}.txt", key.encode(), style),
        ]
    return members


def _read_bytes(data: bytes, limit: int = 10_000, **layout) -> tuple[list[dict], list[Unreadable]]:
    started = time.monotonic()
    items = list(itertools.islice(read_shard(io.BytesIO(data), len(data), "s.tar", SampleLayout(**layout)), limit))
    assert len(items) < limit and time.monotonic() - started < 10, "the reader does not stop"
    return [i for i in items if isinstance(i, dict)], [i for i in items if isinstance(i, Unreadable)]


def _lost(unreadable: list[Unreadable]) -> list[str]:
    return [lost["__key__"] for entry in unreadable for lost in entry.where.get("lost", [])]


def _accounts_for(samples, unreadable, members, keys=None) -> None:
    """Each sample of `members` (those of `keys`, if given) is a record with its bytes or lost in a dead letter."""
    data = {name: content for name, content, *_ in members}
    keys = keys if keys is not None else list(dict.fromkeys(name.split(".")[0] for name in data))
    out = Counter(s["__key__"] for s in samples) + Counter(_lost(unreadable))
    assert all(out[key] >= 1 for key in keys), [key for key in keys if not out[key]]
    for record in samples:
        key = record["__key__"]
        assert record["image_path"]["bytes"] == data[f"{key}.jpg"] and record["text"] == data[f"{key}.txt"].decode()
    assert len({s["__key__"] for s in samples}) == len(samples), "a sample came out twice"


def test_a_negative_member_size_is_damage_not_a_loop(tmp_path):
    """GNU base-256 sizes can be negative; Python 3.11.7's tarfile then reads the same header forever."""
    members = _samples(4)
    data, spans = shard_bytes(members)
    header = spans[3].header  # 000001.txt
    samples, unreadable = _read_bytes(set_size(data, header, -512))
    assert [s["__key__"] for s in samples] == ["000000", "000002", "000003"]
    (entry,) = unreadable
    assert entry.reason == "tar_corrupt" and entry.where["offset"] == header and "negative" in entry.error
    assert entry.where["lost"] == [{"__key__": "000001", "members": ["000001.jpg", "000001.txt"]}]


@pytest.mark.parametrize("typeflag", [b"L", b"K", b"x", b"g"])
def test_a_header_declaring_64_gib_of_names_or_pax_records_is_damage(tmp_path, typeflag):
    """A GNU long-name or PAX header declaring 64 GiB made tarfile allocate it (MemoryError: the job failed)."""
    members = _samples(4)
    data, spans = shard_bytes(members)
    at = spans[4].start  # before 000002.jpg
    crafted = raw_header("././@LongLink", 64 << 30, typeflag)
    (tmp_path / "s.tar").write_bytes(data[:at] + crafted + data[at:])
    with open(tmp_path / "s.tar", "rb") as stream:  # a real file: tarfile reads it with one 64 GiB read
        items = list(itertools.islice(read_shard(stream, len(data) + BLOCK, "s.tar", SampleLayout()), 100))
    samples = [i for i in items if isinstance(i, dict)]
    unreadable = [i for i in items if isinstance(i, Unreadable)]
    _accounts_for(samples, unreadable, members)
    (entry,) = unreadable
    assert entry.reason == "tar_corrupt" and entry.where["offset"] == at and str(64 << 30) in entry.error


# What each crafted header before sample 000002 is, and how many samples are then still known: a valid header
# declaring more data than the file holds makes all after it that member's data, cut short.
CRAFTED_HEADERS = {
    "pax size negative": ("x", pax_records({"size": -10}), 4),
    "pax size huge": ("x", pax_records({"size": "9" * 40}), 3),
    "pax size not a number": ("x", pax_records({"size": "0x10"}), 4),
    "pax record of length 0": ("x", b"0 path=a\n", 4),
    "pax record longer than the header": ("x", b"999 path=000002.jpg\n", 4),
    "pax record length not a number": ("x", b"1e3 path=000002.jpg\n", 4),
    "pax records then zeros": ("x", pax_records({"path": "000002.jpg"}) + bytes(20), 4),
    "pax sparse map past the end": ("x", pax_records({"GNU.sparse.major": 1, "GNU.sparse.minor": 0, "size": 10**6}), 3),
    "base-256 size over 2**80": ("size", (1 << 87) + 5, 3),
    "base-256 size negative, one block": ("size", -1, 4),
    "GNU sparse header whose extension runs past the end": ("S", None, 3),
}


@pytest.mark.parametrize("case", sorted(CRAFTED_HEADERS))
def test_crafted_headers_never_escape_the_reader(case):
    """Mutated headers raised OverflowError and ValueError out of tarfile and the reader, failing the job."""
    members = _samples(4)
    data, spans = shard_bytes(members)
    kind, value, known = CRAFTED_HEADERS[case]
    at = spans[4].start
    if kind == "x":
        data = data[:at] + raw_header("PaxHeader", len(value), b"x") + pad(value) + data[at:]
    elif kind == "size":
        data = set_size(data, at, value)
    else:  # an old GNU sparse header with the "extended" flag set in each of the blocks after it, to the end
        block = bytearray(raw_header("000002.jpg", 0, b"S", checksum=False))
        block[482] = 1
        data = data[:at] + bytes(with_checksum(block)) + b"\x01" * 512 * 3
    samples, unreadable = _read_bytes(data)
    _accounts_for(samples, unreadable, members, keys=[f"{n:06d}" for n in range(known)])
    assert unreadable and all(entry.reason.startswith("tar_") for entry in unreadable)
    assert not {s["__key__"] for s in samples} - {f"{n:06d}" for n in range(4)}


ZEROS = {
    # a header zeroed in the middle of a sample: the sample is cut, the rest is read
    "one zeroed header": (8, lambda data, spans: _zero(data, spans[7].header, BLOCK)),
    "a 64 KiB hole": (40, lambda data, spans: _zero(data, spans[21].data + 100, 64 << 10)),
    "zeros to the end (a copy stopped in a preallocated file)": (
        40,
        lambda data, spans: _zero(data, spans[35].data + 7, len(data)),
    ),
    "an end-of-archive marker without its padding, then more members": (
        6,
        lambda data, spans: data[: spans[6].start] + bytes(2 * BLOCK) + data[spans[6].start :],
    ),
}


def _zero(data: bytes, start: int, length: int) -> bytes:
    return data[:start] + bytes(len(data[start : start + length])) + data[start + length :]


@pytest.mark.parametrize("case", sorted(ZEROS))
def test_zero_blocks_in_the_middle_of_a_shard_are_damage_not_its_end(case):
    """A zero block ended the shard silently (8 samples in, 3 out; a 64 KiB hole: 40 in, 21 out). The real
    end is a zero block followed by zeros only (one record of padding at most); anything else is damage."""
    count, damage = ZEROS[case]
    members = _samples(count)
    original, spans = shard_bytes(members)
    data = damage(original, spans)
    samples, unreadable = _read_bytes(data)
    intact = [
        span.name.split(".")[0]
        for span in spans
        if data[span.start : span.end] == original[span.start : span.end]
        or data.find(original[span.start : span.end]) >= 0
    ]
    _accounts_for(samples, unreadable, members, keys=[k for k in dict.fromkeys(intact) if intact.count(k) == 2])
    assert unreadable, "the damage is reported"
    assert len(samples) + len(set(_lost(unreadable))) >= len(set(intact)) // 2


def test_tars_joined_with_cat_are_read_as_one_shard(tmp_path):
    """`cat a.tar b.tar`: the first archive's end-of-archive marker (padded to a record, as tar writers do),
    then the second archive; read on, as GNU tar's --ignore-zeros does."""
    first, second = _samples(3), _samples(3, prefix="b")
    data = shard_bytes(first)[0] + shard_bytes(second)[0]
    samples, unreadable = _read_bytes(data)
    assert unreadable == []
    assert [s["__key__"] for s in samples] == [f"{n:06d}" for n in range(3)] + [f"b{n:06d}" for n in range(3)]
    _accounts_for(samples, unreadable, first + second)


SPARSE_STYLES = [style for style in MEMBER_STYLES if style.startswith("sparse")]


@pytest.mark.parametrize("style", SPARSE_STYLES)
def test_gnu_sparse_members_are_stepped_over_by_their_stored_size(style):
    """A valid sparse member was reported tar_truncated and the samples after it were lost, unlisted."""
    members = _samples(6)
    members.insert(3, ("000001.cls", b"class " * 300, style))  # not read into the record
    members[7] = ("000003.jpg", members[7][1], style)  # the record's image: not expanded, reported
    data, spans = shard_bytes(members)
    samples, unreadable = _read_bytes(data)
    assert [s["__key__"] for s in samples] == ["000000", "000001", "000002", "000004", "000005"]
    (entry,) = unreadable
    assert entry.reason == "tar_sparse_member" and entry.where["__key__"] == "000003"
    assert "000003.jpg" in entry.error and entry.where["members"] == ["000003.jpg", "000003.txt"]


@pytest.mark.skipif(not shutil.which("tar"), reason="GNU tar is not installed")
@pytest.mark.parametrize("style", SPARSE_STYLES)
def test_crafted_sparse_members_are_what_gnu_tar_writes(tmp_path, style):
    """The shard writer's sparse members read back with GNU tar as the files they stand for."""
    if "GNU tar" not in subprocess.run(["tar", "--version"], capture_output=True, text=True).stdout:
        pytest.skip("tar is not GNU tar")
    content = bytes(range(1, 256)) * 9
    (tmp_path / "s.tar").write_bytes(shard_bytes([("a.cls", content, style), ("b.txt", b"after")])[0])
    subprocess.run(["tar", "-xf", "s.tar"], cwd=tmp_path, check=True)
    half = len(content) // 2 // BLOCK * BLOCK
    expanded = content[:half] + bytes(SPARSE_HOLE) + content[half:] + bytes(BLOCK)
    assert (tmp_path / "a.cls").read_bytes() == expanded and (tmp_path / "b.txt").read_bytes() == b"after"


def test_a_tar_stored_in_a_member_is_never_read_as_samples():
    """After a damaged header, reading resumed inside that member's data: the tar stored there came out as
    records that never existed, and its end-of-archive marker ended the shard."""
    inner, _ = shard_bytes(_samples(3, prefix="inner"))
    members = _samples(5)
    members.insert(3, ("000001.tar", inner))
    data, spans = shard_bytes(members)
    damaged = bytearray(data)
    damaged[spans[3].header + 1] ^= 0x40  # a bit of the member's name flipped: its checksum fails
    samples, unreadable = _read_bytes(bytes(damaged))
    keys = {s["__key__"] for s in samples} | set(_lost(unreadable))
    assert not any("inner" in key for key in keys), keys
    _accounts_for(samples, unreadable, members)
    assert [s["__key__"] for s in samples][-2:] == ["000003", "000004"]


COMPRESSIONS = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda data: b"\x28\xb5\x2f\xfd" + data,  # the magic number is all the reader looks at
}


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_a_compressed_shard_named_tar_says_it_is_compressed(compression):
    data, _ = shard_bytes(_samples(2))
    samples, unreadable = _read_bytes(COMPRESSIONS[compression](data))
    (entry,) = unreadable
    assert samples == [] and entry.reason == "tar_compressed" and compression in entry.error


@pytest.mark.parametrize("magic", [b"BZh", b"\x1f\x8b", b"\xfd7zXZ\x00"])
def test_a_tar_whose_first_bytes_look_like_a_compression_magic_is_still_read(magic):
    """The fuzzer's find: `BZh` inserted before the first header made the shard "bzip2-compressed", and its
    samples were lost without a trace; a magic number alone is not a compressed stream."""
    members = _samples(3)
    samples, unreadable = _read_bytes(magic + shard_bytes(members)[0])
    assert all(entry.reason != "tar_compressed" for entry in unreadable), unreadable
    _accounts_for(samples, unreadable, members)


def test_members_without_a_key_are_listed_in_the_dead_letter():
    """`.jpg` and `dir/.txt` have no key (nothing before the first dot): they were dropped without a trace."""
    members = _samples(2)
    members[2:2] = [(".jpg", b"no stem"), ("dir/.txt", b"no stem either")]
    samples, unreadable = _read_bytes(shard_bytes(members)[0])
    assert [s["__key__"] for s in samples] == ["000000", "000001"]
    assert [(u.reason, u.where["members"]) for u in unreadable] == [
        ("tar_member_without_key", [".jpg"]),
        ("tar_member_without_key", ["dir/.txt"]),
    ]


def test_member_names_that_are_not_utf8_keep_their_bytes_as_escapes():
    """Keys are text in every output: bytes that are not UTF-8 are written as `\\xNN` escapes."""
    members = [("caf\udce9.jpg", b"image"), ("caf\udce9.txt", b"caption"), ("\udcff.jpg", b"cut")]
    data, spans = shard_bytes(members)
    samples, unreadable = _read_bytes(data[: spans[2].data])
    assert [s["__key__"] for s in samples] == ["caf\\xe9"] and _lost(unreadable) == ["\\xff"]
    json.dumps([samples[0]["__key__"], unreadable[0].where], ensure_ascii=False).encode("utf-8")


def _img2dataset_folder(root, image_paths):
    """A directory of img2dataset output: 5 shards (one with nested folders and a repeated key), one of them
    cut short, one with a damaged header and one with a header declaring a 64 GiB long name (which made tarfile
    fail the job), beside the Parquet and stats files img2dataset writes too.
    Returns the images by name and the (shard, key) of every sample that can still be read or cut."""
    images = {name: jpeg(path) for name, path in image_paths.items()}
    names, captions = sorted(images), sorted(CAPTIONS)
    shards, written = {}, []
    for shard in range(4):
        members = []
        for index in range(5):
            key = f"{shard:05d}{index:04d}"
            if shard == 1 and index >= 3:
                key = f"part/{key}"
            image = None if (shard, index) == (0, 3) else images[names[(shard * 5 + index) % len(names)]]
            caption = None if (shard, index) == (0, 4) else CAPTIONS[captions[(shard + index) % len(captions)]]
            members += img2dataset_sample(key, image, caption)
            written.append((f"{shard:05d}.tar", key))
        if shard == 1:  # the same key twice in a row: two samples
            members += img2dataset_sample(key, images[names[0]], "the same key again")
            written.append((f"{shard:05d}.tar", key))
        shards[shard] = members
    offsets = {shard: write_shard(root / f"{shard:05d}.tar", members) for shard, members in shards.items()}
    data = (root / "00002.tar").read_bytes()
    (root / "00002.tar").write_bytes(data[: offsets[2]["000020003.jpg"] + 700])  # cut inside sample 3
    written.remove(("00002.tar", "000020004"))  # wholly past the cut: gone without a trace
    damaged = bytearray((root / "00003.tar").read_bytes())
    at = offsets[3]["000030001.txt"]
    damaged[at : at + 16] = b"\x00\x01" * 8  # sample 1 loses its caption's header
    (root / "00003.tar").write_bytes(bytes(damaged))
    members = []
    for index in range(3):
        members += img2dataset_sample(f"0000400{index:02d}", images[names[index]], CAPTIONS[captions[index]])
        written.append(("00004.tar", f"0000400{index:02d}"))
    data, spans = shard_bytes(members)
    at = spans[3].start  # sample 1's first member
    (root / "00004.tar").write_bytes(data[:at] + raw_header("././@LongLink", 64 << 30, b"L") + data[at:])
    (root / "00000.parquet").write_bytes(b"img2dataset's metadata, not a shard")
    (root / "00000_stats.json").write_text("{}")
    return images, written


@pytest.mark.slow
def test_img2dataset_shards_to_parquet_with_embeddings(tmp_path, longclip_checkpoint, longclip_state_dict, good_images):
    root = tmp_path / "shards"
    chosen = {name: good_images[name] for name in ("rgb.png", "grey.png", "cmyk.jpg", "rgb.jpg")}
    images, written = _img2dataset_folder(root, chosen)
    done = run_job(
        *["--input", str(root / "*.tar"), "--output", str(tmp_path / "out" / "scored")],
        *["--output_format", "parquet", "--embeddings", "--model", str(longclip_checkpoint), "--max_batch_size", "8"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted((tmp_path / "out").glob("scored-*-of-*.parquet"))
    assert files, list((tmp_path / "out").iterdir())
    table = pa.concat_tables(pq.read_table(path) for path in files)
    names = table.schema.names
    assert names[:4] == ["image_path", "text", "__key__", "__url__"] and "record" not in names
    assert names[-6:] == [
        "longclip_score", "longclip_score_reason", "longclip_score_error", "longclip_score_truncated",
        "longclip_score_image_embedding", "longclip_score_text_embedding",
    ]  # fmt: skip
    assert table.schema.field("status").type == pa.string(), "the .json members' fields are typed columns"
    assert table.schema.field("longclip_score_image_embedding").type == pa.list_(pa.float32())
    assert table.schema.field("longclip_score").type == pa.float64()
    rows = table.to_pylist()
    dead = [json.loads(line) for path in (tmp_path / "out").glob("scored.dead_letter-*.jsonl") for line in path.open()]

    # Every sample written comes out once: a row, or a sample lost in a dead-letter entry about its shard.
    out = Counter((row["__url__"].rsplit("/", 1)[-1], row["__key__"]) for row in rows)
    for entry in dead:
        where = json.loads(entry["raw"])
        assert entry["source"] == where["__url__"] and str(where["offset"]) in entry["error"]
        lost_keys = {lost["__key__"] for lost in where["lost"]}  # a sample cut in two is listed in two pieces
        out.update((where["__url__"].rsplit("/", 1)[-1], key) for key in lost_keys)
    assert out == Counter(written)
    assert sorted(entry["reason"] for entry in dead) == ["tar_corrupt", "tar_corrupt", "tar_truncated"]
    assert f"Done: {len(rows) + len(dead)} records read" in done.stderr

    by_key = {(row["__url__"].rsplit("/", 1)[-1], row["__key__"]): row for row in rows}
    assert by_key[("00000.tar", "000000003")]["longclip_score_reason"] == "image_missing"
    assert by_key[("00000.tar", "000000004")]["longclip_score_reason"] == "text_missing"
    assert by_key[("00001.tar", "part/000010003")]["image_path"] == "part/000010003.jpg"
    scored = [row for row in rows if row["longclip_score_reason"] is None]
    assert len(scored) == len(rows) - 2 >= 15
    worst = 0.0
    for row in scored:
        assert row["status"] == "success"
        image_bytes = next(data for data in images.values() if row["sha256"] == hashlib.sha256(data).hexdigest())
        expected = reference_score(longclip_state_dict, io.BytesIO(image_bytes), row["text"])
        worst = max(worst, abs(row["longclip_score"] - expected))
        image = torch.tensor(row["longclip_score_image_embedding"], dtype=torch.float64)
        text = torch.tensor(row["longclip_score_text_embedding"], dtype=torch.float64)
        assert image.shape == text.shape == (32,)
        assert abs(image.norm() - 1) < 1e-5 and abs(text.norm() - 1) < 1e-5
        assert abs(min(max((image @ text + 1) / 2, 0.0), 1.0) - row["longclip_score"]) < 1e-6
    assert worst < 1e-6, f"max |score - original LongCLIP| = {worst}"
    failed = [row for row in rows if row["longclip_score_reason"]]
    assert all(row["longclip_score_image_embedding"] is None and row["longclip_score"] == 0.0 for row in failed)


def test_shards_on_gcs_to_jsonl(gcs_bucket, tmp_path, longclip_checkpoint, good_images):
    """Shards read through Beam's gs:// FileSystem (a real GCS emulator); JSONL output keeps the member name."""
    members = []
    for index, name in enumerate(("rgb.jpg", "grey.png", "rgb.png")):
        members += img2dataset_sample(f"00000{index:04d}", jpeg(good_images[name]), CAPTIONS["short"])
    write_shard(tmp_path / "00000.tar", members)
    gcs_bucket.blob("wds/00000.tar").upload_from_filename(tmp_path / "00000.tar")
    argv = ["--input", "gs://longclip-test-bucket/wds/*.tar", "--output", str(tmp_path / "out" / "scored")]
    counts = summarize(run(argv + ["--model", str(longclip_checkpoint)]))
    assert (counts["read"], counts["scored"]) == (3, 3)
    rows = [json.loads(line) for path in (tmp_path / "out").glob("scored-*.jsonl") for line in path.open()]
    assert sorted(row["image_path"] for row in rows) == ["000000000.jpg", "000000001.jpg", "000000002.jpg"]
    assert {row["__url__"] for row in rows} == {"gs://longclip-test-bucket/wds/00000.tar"}
    assert all(row["caption"] == row["text"] == CAPTIONS["short"] and 0 < row["longclip_score"] < 1 for row in rows)
