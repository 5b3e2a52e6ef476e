"""Samples copied out of a shard: every member byte for byte and in order, the scores in the `.json`, headers as
tarfile writes them; the samples are those the reader made records of, also around damage."""

import io
import json
import tarfile

import pytest

from pipeline.io import tar
from pipeline.io.tar_copy import ShardChanged, TarStream, Wanted, copy_samples, source_samples, with_scores
from pipeline.io.webdataset import OFFSET_KEY, SampleLayout, Unreadable, read_shard
from transforms.testing.datasets import shard_bytes

SCORES = {"longclip_score": 0.75, "longclip_score_error": None, "longclip_score_reason": None}
LONG = "folder-" + "x" * 120 + "/000003"  # a key past ustar's 100-byte name field: a PAX header


def _members():
    """Samples as img2dataset and other tools leave them, with members the reader skips."""
    return [
        ("000001.jpg", b"\xff\xd8 jpeg one"),
        ("000001.json", b'{"url": "https://x/1.jpg", "width": 1.0e2, "caption": "caf\\u00e9"}\n'),
        ("000001.seg.png", b"\x89PNG segmentation"),
        ("000001.npy", bytes(range(256)) * 9),
        ("000001.txt", b"one"),
        ("a/", b""),  # a folder: no sample's member
        ("a/000002.png", b"\x89PNG two"),
        ("a/000002.txt", "two \N{CAT FACE}".encode()),  # no .json: one is made
        (f"{LONG}.jpg", b"three"),
        (f"{LONG}.json", b"\xef\xbb\xbf{ }"),  # a byte-order mark, an empty object
        ("caf\u00e9/000004.jpg", b"four"),
        ("caf\u00e9/000004.json", b'{"longclip_score": 0.1, "keep": [1, 2]}'),  # already scored: rewritten
        ("README", b"no extension: no sample's member"),
        ("000005.jpg", b"five"),
        ("000005.txt", b"five"),
        ("000005.txt", b"the same key, a repeated extension: another sample"),
    ]


def _records(data: bytes):
    items = list(read_shard(io.BytesIO(data), len(data), "s.tar", SampleLayout(with_offsets=True)))
    return [item for item in items if isinstance(item, dict)], [item for item in items if isinstance(item, Unreadable)]


def _copy(data: bytes, wanted) -> tuple[bytes, list]:
    out = io.BytesIO()
    stream = TarStream(out)
    left_out = list(copy_samples(io.BytesIO(data), len(data), "s.tar", wanted, stream))
    stream.close()
    return out.getvalue(), left_out


def _tar_members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return [(member.name, archive.extractfile(member).read()) for member in archive]


def test_chosen_samples_come_out_whole_in_order_with_scores_in_their_json():
    members = _members()
    data, _ = shard_bytes(members)
    records, unreadable = _records(data)
    assert unreadable == []
    assert [r["__key__"] for r in records] == ["000001", "a/000002", LONG, "caf\u00e9/000004", "000005", "000005"]
    chosen = [records[i] for i in (0, 1, 2, 3, 5)]  # all but the first of the two samples keyed 000005
    wanted = [Wanted(r[OFFSET_KEY], r["__key__"], {**SCORES, "longclip_score": i / 10}) for i, r in enumerate(chosen)]
    copied, left_out = _copy(data, wanted)
    assert left_out == []

    scores = [{**SCORES, "longclip_score": i / 10} for i in range(5)]
    expected = members[:5] + members[6:8] + [("a/000002.json", None)] + members[8:12]
    expected += [members[-1], ("000005.json", None)]
    got = _tar_members(copied)
    assert [name for name, _ in got] == [name for name, _ in expected]
    jsons = [body for name, body in got if name.endswith(".json")]
    for (name, body), (_, original) in zip(got, expected, strict=True):
        if not name.endswith(".json"):
            assert body == original, name
    # The .json: its own text kept byte for byte, the scores added before the closing brace.
    assert jsons[0] == members[1][1][:-2] + b', "longclip_score": 0.0, "longclip_score_error": null, ' + (
        b'"longclip_score_reason": null}\n'
    )
    assert json.loads(jsons[1]) == scores[1]  # made for the sample without one
    fields = b'"longclip_score": 0.2, "longclip_score_error": null, "longclip_score_reason": null'
    assert jsons[2] == b"\xef\xbb\xbf{" + fields + b"}"
    assert json.loads(jsons[3]) == {"longclip_score": 0.3, "keep": [1, 2], **scores[3]}
    assert json.loads(jsons[4]) == scores[4]

    # The project's reader reads the new shard as the chosen samples, with their scores.
    again, unreadable = _records(copied)
    assert unreadable == []
    assert [r["__key__"] for r in again] == [r["__key__"] for r in chosen]
    assert [r["longclip_score"] for r in again] == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert again[0]["width"] == 100.0 and again[0]["caption"] == "caf\u00e9" and again[0]["text"] == "one"
    assert again[4]["text"] == "the same key, a repeated extension: another sample"


def test_headers_are_what_tarfile_writes_in_pax_format_and_the_same_samples_give_the_same_bytes():
    data, _ = shard_bytes(_members())
    records, _ = _records(data)
    wanted = [Wanted(r[OFFSET_KEY], r["__key__"], SCORES) for r in records]
    copied, _ = _copy(data, wanted)
    assert _copy(data, wanted)[0] == copied
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, body in _tar_members(copied):
            info = tarfile.TarInfo(name)  # mode 0644, mtime 0, no owner
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    assert copied == expected.getvalue()
    assert len(copied) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(copied)) as archive:
        long = archive.getmember(f"{LONG}.jpg")
        assert long.pax_headers["path"] == f"{LONG}.jpg" and (long.mtime, long.mode, long.uname) == (0, 0o644, "")


def test_the_samples_walked_are_the_readers_records_around_damage():
    """Damage cuts the sample being read (the reader made no record of it); samples after it are found again."""
    members = [(f"{n:06d}.{ext}", f"{n} {ext}".encode()) for n in range(6) for ext in ("jpg", "txt", "json")]
    members = [(name, b"{}" if name.endswith("json") else body) for name, body in members]
    data, spans = shard_bytes(members)
    damaged = bytearray(data)
    damaged[spans[7].header + 1] ^= 0x40  # 000002.txt's header: its checksum fails
    damaged = bytes(damaged)
    records, unreadable = _records(damaged)
    assert unreadable and "000002" not in [r["__key__"] for r in records]
    walked = {sample.offset: sample for sample in source_samples(io.BytesIO(damaged), len(damaged))}
    for record in records:
        sample = walked[record[OFFSET_KEY]]
        assert sample.whole and sample.key == record["__key__"]
        assert [entry.name for entry in sample.members] == [name for name, _ in members if name[:6] == sample.key]
    assert not walked[spans[6].start].whole  # 000002, cut

    wanted = [Wanted(r[OFFSET_KEY], r["__key__"], {}) for r in records]
    copied, _ = _copy(damaged, wanted)
    assert [name for name, _ in _tar_members(copied)] == [name for name, _ in members if name[:6] != "000002"]


@pytest.mark.parametrize("style", ["sparse-gnu", "sparse-1.0", "symlink"])
def test_members_that_are_not_regular_files_are_left_out_and_said(style):
    members = [("000001.jpg", b"one"), ("000001.txt", b"one"), ("000001.npy", b"sparse " * 200, style)]
    if style == "symlink":
        members[2] = ("000001.npy", b"")
    data, spans = shard_bytes(members)
    if style == "symlink":  # a symbolic link's header, its checksum recomputed
        header = bytearray(data[spans[2].header : spans[2].header + tar.BLOCK])
        header[156:157] = tarfile.SYMTYPE
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        data = data[: spans[2].header] + bytes(header) + data[spans[2].header + tar.BLOCK :]
    (record,), _ = _records(data)
    copied, left_out = _copy(data, [Wanted(record[OFFSET_KEY], "000001", SCORES)])
    assert [name for name, _ in _tar_members(copied)] == ["000001.jpg", "000001.txt", "000001.json"]
    (item,) = left_out
    assert item.entry.name == "000001.npy" and item.key == "000001" and item.url == "s.tar"
    sparse = "a GNU sparse file, whose stored bytes are not its content"
    assert item.why == ("a symbolic link" if style == "symlink" else sparse)


def test_a_shard_that_changed_after_it_was_read_stops_the_copy():
    data, spans = shard_bytes(_members())
    records, _ = _records(data)
    with pytest.raises(ShardChanged, match=r"s.tar changed after it was read: sample 000001 is no longer at byte 1"):
        _copy(data, [Wanted(1, "000001", SCORES)])
    with pytest.raises(ShardChanged, match="sample a/000002 is no longer at byte"):
        _copy(data, [Wanted(records[0][OFFSET_KEY], "a/000002", SCORES)])  # another key there now
    broken = data.replace(b'{"url": "https://x/1.jpg"', b'["url", "https://x/1.jpg"', 1)
    out = io.BytesIO()
    with pytest.raises(ShardChanged, match="000001.json is no longer a JSON object"):
        list(copy_samples(io.BytesIO(broken), len(broken), "s.tar", [Wanted(0, "000001", {})], TarStream(out)))
    assert out.getvalue() == b"", "nothing of the sample was written"


@pytest.mark.parametrize(
    "original, expected",
    [
        (b'{"a": 1}', b'{"a": 1, "s": 0.5}'),
        (b'  {"a": NaN , "b": {}}  \r\n', b'  {"a": NaN , "b": {}, "s": 0.5}  \r\n'),
        (b"{}", b'{"s": 0.5}'),
        (b'{"s": 0.1, "a": "\\u00e9"}', '{"s": 0.5, "a": "\u00e9"}'.encode()),  # rewritten, values kept
    ],
)
def test_scores_join_the_json_text_as_it_is(original, expected):
    assert with_scores(original, {"s": 0.5}) == expected
