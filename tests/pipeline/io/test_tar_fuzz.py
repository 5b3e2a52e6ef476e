"""Fuzzing the WebDataset reader with damaged and crafted tar headers.

Valid shards (random samples and keys, members written as ustar, GNU long-name, PAX and GNU sparse members,
some holding a whole tar archive) are mutated: header bytes flipped, size fields set (negative, huge,
base-256), type flags and PAX records replaced, checksums recomputed or not, the file cut, zeros written over
or inserted, bytes inserted or deleted (the headers after them out of step with the blocks), garbage or another
shard appended. `TAR_FUZZ_EXAMPLES=10000` runs more examples than the suite.

What holds for every mutation: the reader never raises; it ends within a time limit, yields at most one item
per 512-byte block and allocates a bounded multiple of the file; every record's image and caption are bytes
of the file, and every key it gives (in a record or a dead letter) is an original sample's key or spelled
by bytes of the file; no sample comes out as its exact record twice.

What holds for an original sample whose own bytes (its headers and data, from its first header block to the
end of its last member's data) are intact: it comes out, as its record (with its exact image, caption and
JSON) or listed by key in a dead letter; unless its first header now lies inside the data of a member whose
valid header the walk accepted (bytes deleted before it, or a shard appended to one cut short: the archive
says it is that member's data), or a header before it was forged, i.e. changed so that it is still valid, or
a size field, long name or PAX records before it changed, which no reader can tell from the truth. A tar
stored as a member is never read as samples when the member's header is intact (and not in the data of a
member accepted before it), or is the one damaged header (its size intact).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from pipeline.io import tar
from pipeline.io.webdataset import SampleLayout, Unreadable, read_shard
from transforms.testing.datasets import BLOCK, MEMBER_STYLES, pax_records, shard_bytes, size_field, with_checksum

EXAMPLES = int(os.environ.get("TAR_FUZZ_EXAMPLES", "200"))
INNER, _ = shard_bytes(
    [("inner0000.jpg", b"inner image"), ("inner0000.txt", b"inner caption"), ("inner0001.txt", b"x")]
)


def _appended(number: int) -> dict:
    """The samples of the `number`th shard appended: their key and content by extension."""
    return {
        f"c{number}0": {"jpg": b"jpg appended %d" % number, "txt": b"text %d" % number},
        f"c{number}1": {"txt": b"x"},
    }


SIZES = [-1, -512, -(2**80), 0, 1, 511, 512, 513, 8**11 - 1, 8**11, 2**33, 2**63, 2**88, 64 << 30]
TYPEFLAGS = [b"0", b"\0", b"1", b"2", b"3", b"5", b"7", b"L", b"K", b"x", b"g", b"X", b"S", b"V", b"D", b"Z", b"\xff"]
PAX_PAYLOADS = [
    pax_records({"size": -5}),
    pax_records({"size": 2**70}),
    pax_records({"size": 0}),
    pax_records({"size": 700}),
    pax_records({"path": "0000.jpg"}),
    pax_records({"path": ""}),
    pax_records({"GNU.sparse.major": 1, "GNU.sparse.minor": 0, "GNU.sparse.name": "0001.jpg"}),
    pax_records({"GNU.sparse.map": "0,5", "GNU.sparse.size": 2**40}),
    b"0 path=x\n",
    b"5 a=b\n",
    b"99999999999 path=x\n",
    b"12 path=\xff\xfe.jpg\n",
    b"\xff" * 30,
]
MEMBER_SETS = [("jpg", "txt"), ("jpg", "json", "txt"), ("jpg",), ("txt",), ("cls", "jpg", "txt"), ("jpg", "tar", "txt")]


@st.composite
def shards(draw):
    """Members of 1 to 6 samples with unique keys, and each sample's key and content by extension."""
    prefix = draw(st.sampled_from(["", "p/", "a/b/", "d" * 60 + "/", "e" * 120 + "/", "f" * 160 + "/"]))
    members, samples = [], []
    for number in range(draw(st.integers(1, 6))):
        key, content = f"{prefix}{number:04d}", {}
        for extension in draw(st.sampled_from(MEMBER_SETS)):
            if extension in ("jpg", "cls"):
                data = draw(st.binary(max_size=1200 if extension == "jpg" else 700))
                data = f"jpg {key} ".encode() + data if extension == "jpg" else data
            else:
                data = {"txt": f"text of {key}".encode(), "json": json.dumps({"k": key}).encode(), "tar": INNER}[
                    extension
                ]
            members.append((f"{key}.{extension}", data, draw(st.sampled_from(MEMBER_STYLES))))
            content[extension] = data
        samples.append((key, content))
    return members, samples


targeted = st.integers(0, 10**6)
MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), targeted, st.integers(0, 511), st.integers(1, 255), st.booleans()),
    st.tuples(st.just("flip anywhere"), st.integers(0, 10**7), st.integers(1, 255)),
    st.tuples(st.just("size"), targeted, st.sampled_from(SIZES) | st.integers(-(2**90), 2**90), st.booleans()),
    st.tuples(st.just("type"), targeted, st.sampled_from(TYPEFLAGS), st.booleans()),
    st.tuples(st.just("pax"), targeted, st.sampled_from(PAX_PAYLOADS), st.booleans()),
    st.tuples(st.just("truncate"), st.integers(0, 10**7)),
    st.tuples(st.just("zero"), st.integers(0, 10**7), st.integers(1, 70_000)),
    st.tuples(st.just("zero blocks"), targeted, st.integers(1, 24)),
    st.tuples(st.just("insert zeros"), targeted, st.integers(1, 24)),
    st.tuples(st.just("insert bytes"), st.integers(0, 10**7), st.binary(min_size=1, max_size=700)),
    st.tuples(st.just("delete bytes"), st.integers(0, 10**7), st.integers(1, 2000)),
    st.tuples(st.just("append garbage"), st.binary(min_size=1, max_size=1500)),
    st.tuples(st.just("append a shard")),
)


@dataclass
class Region:
    """Bytes of the original shard, followed through the mutations: where they are now, if still whole."""

    kind: str  # "sample", "header", "size" (a header's size field) or "metadata" (long name or PAX records)
    original: bytes
    offset: int
    key: str = ""
    broken: bool = False  # bytes were inserted inside it or it was cut off

    def intact(self, data: bytes) -> bool:
        return not self.broken and data[self.offset : self.offset + len(self.original)] == self.original


@dataclass
class Mutated:
    data: bytes
    regions: list = field(default_factory=list)
    own_headers: dict = field(default_factory=dict)  # member name -> its own header's region
    appended: dict = field(default_factory=dict)  # key -> content of the samples of shards appended

    def add(self, data: bytes, spans, samples, at: int) -> None:
        for span in spans:
            self.own_headers[span.name] = Region("header", data[span.header : span.data], at + span.header)
            self.regions += [Region("header", data[span.start : span.start + BLOCK], at + span.start)]
            self.regions.append(self.own_headers[span.name])
            self.regions.append(Region("size", data[span.header + 124 : span.header + 136], at + span.header + 124))
            if span.start < span.header:
                self.regions.append(Region("metadata", data[span.start + BLOCK : span.header], at + span.start + BLOCK))
        for key, _ in samples:
            mine = [span for span in spans if span.name.split(".")[0] == key]
            original = data[mine[0].start : mine[-1].end]
            self.regions.append(Region("sample", original, at + mine[0].start, key))

    def headers(self) -> list[int]:
        return sorted({region.offset for region in self.regions if region.kind == "header"}) or [0]

    def insert(self, at: int, blob: bytes) -> None:
        self.data = self.data[:at] + blob + self.data[at:]
        for region in self.regions:
            if region.offset >= at:
                region.offset += len(blob)
            elif at < region.offset + len(region.original):
                region.broken = True

    def delete(self, at: int, length: int) -> None:
        self.data = self.data[:at] + self.data[at + length :]
        for region in self.regions:
            if region.offset >= at + length:
                region.offset -= length
            elif at < region.offset + len(region.original):
                region.broken = True

    def overwrite(self, at: int, blob: bytes) -> None:
        self.data = self.data[:at] + blob[: max(len(self.data) - at, 0)] + self.data[at + len(blob) :]

    def apply(self, mutation: tuple) -> None:
        kind, *args = mutation
        data, headers = self.data, self.headers()
        if kind in ("flip", "size", "type", "pax", "zero blocks", "insert zeros"):
            at = headers[args[0] % len(headers)]
            if kind == "insert zeros":
                return self.insert(at, bytes(BLOCK * args[1]))
            if kind == "zero blocks":
                return self.overwrite(at, bytes(BLOCK * args[1]))
            if at + BLOCK > len(data):
                return
            block = bytearray(data[at : at + BLOCK])
            if kind == "flip":
                block[args[1]] ^= args[2]
            elif kind == "size":
                block[124:136] = size_field(args[1])
            elif kind == "type":
                block[156:157] = args[1]
            else:  # PAX records in the block after this header, which it is made to declare
                self.overwrite(at + BLOCK, args[1] + bytes(-len(args[1]) % BLOCK))
                block[124:136] = size_field(len(args[1]))
            self.overwrite(at, bytes(with_checksum(block)) if args[-1] else bytes(block))
        elif kind == "flip anywhere" and data:
            at = args[0] % len(data)
            self.overwrite(at, bytes([data[at] ^ args[1]]))
        elif kind == "insert bytes":
            self.insert(args[0] % (len(data) + 1), args[1])
        elif kind == "delete bytes" and data:
            self.delete(args[0] % len(data), args[1])
        elif kind == "truncate":
            self.data = data[: args[0] % (len(data) + 1)]
            for region in self.regions:
                region.broken |= region.offset + len(region.original) > len(self.data)
        elif kind == "zero" and data:
            self.overwrite(args[0] % len(data), bytes(args[1]))
        elif kind == "append garbage":
            self.data += args[0]
        elif kind == "append a shard":
            samples = _appended(len(self.appended) // 2)
            members = [(f"{key}.{ext}", data) for key, content in samples.items() for ext, data in content.items()]
            appended, spans = shard_bytes(members)
            self.add(appended, spans, list(samples.items()), len(data))
            self.appended |= samples
            self.data += appended

    def forged(self) -> list[int]:
        """Where a header was changed and is still valid, a size field changed to another octal number (the
        reader may trust a damaged header's size to step over a tar stored in its data), or a long name or PAX
        records changed."""
        data, forged = self.data, []
        for region in self.regions:
            now = data[region.offset : region.offset + len(region.original)]
            if region.kind == "sample" or region.intact(data):
                continue
            if region.kind == "header" and not _valid_header(now):
                continue
            if region.kind == "size" and _octal(now) in (None, 0, _octal(region.original)):
                continue
            forged.append(region.offset)
        return forged


def _octal(field: bytes):
    digits = field.split(b"\0", 1)[0].strip(b" ")
    return None if len(field) < 8 or digits.translate(None, b"01234567") else int(digits or b"0", 8)


def _valid_header(block: bytes) -> bool:
    """Whether `block` is a tar header by its checksum (unsigned or signed sum, the field counted as spaces)."""
    stored = _octal(block[148:156])
    signed = [byte - 256 * (byte > 127) for byte in block]
    sums = (sum(block) - sum(block[148:156]) + 256, sum(signed) - sum(signed[148:156]) + 256)
    return len(block) == BLOCK and stored is not None and any(block[148:156]) and stored in sums


def _in_file(key: str, data: bytes) -> bool:
    """Whether every part of `key` (between slashes) is spelled by bytes of the file (`\\xNN`: a byte)."""
    raw = re.sub(rb"\\x([0-9a-f]{2})", lambda match: bytes([int(match.group(1), 16)]), key.encode("utf-8"))
    return all(part in data for part in raw.split(b"/") if part) or all(
        part.encode() in data for part in key.split("/") if part
    )


def _matches(record: dict, content: dict) -> bool:
    """Whether a record holds a sample's exact image, caption and JSON (those it has)."""
    return (
        ("jpg" not in content or record.get("image_path", {}).get("bytes") == content["jpg"])
        and ("txt" not in content or record.get("text") == content["txt"].decode())
        and ("json" not in content or record.get("k") == json.loads(content["json"])["k"])
    )


@settings(max_examples=EXAMPLES)
@given(shard=shards(), mutations=st.lists(MUTATIONS, max_size=4))
def test_damaged_and_crafted_headers(shard, mutations):
    members, samples = shard
    original, spans = shard_bytes(members)
    mutated = Mutated(original)
    mutated.add(original, spans, samples, 0)
    for mutation in mutations:
        mutated.apply(mutation)
    data = mutated.data
    note(f"{len(data)} bytes; mutations: {[m if m[0] != 'append garbage' else m[0] for m in mutations]}")

    # The walk over the headers only moves forward (members strictly), and all it accepts lies inside the file.
    previous, last_member, extents = 0, -1, []
    for item in tar.entries(io.BytesIO(data), len(data)):
        start = item.start if isinstance(item, tar.Damage) else item.offset
        assert previous <= start and (not isinstance(item, tar.Damage) or start <= item.end <= len(data))
        if isinstance(item, tar.Entry):
            assert last_member < item.offset < item.data and 0 <= item.size and item.data + item.size <= len(data)
            last_member = item.offset
            extents.append((item.data, item.data + item.size))
        elif isinstance(item, tar.Damage) and item.reason == "tar_truncated" and "inside" in item.message:
            # A valid header declaring more data than the file holds: all after it is that member's data, cut
            # short (a tar stored in it must not come out as samples); a shard appended after it is in there too.
            extents.append((item.start, item.end))
        previous = start

    started = time.monotonic()
    tracemalloc.start()
    bound = 2 * (len(data) // BLOCK) + 2  # items: a valid header moves the reader at least a block on
    items = list(itertools.islice(read_shard(io.BytesIO(data), len(data), "fuzz.tar", SampleLayout()), bound + 1))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert time.monotonic() - started < 5 and len(items) <= bound
    assert peak < 4 * len(data) + (1 << 20), f"{peak} bytes allocated to read {len(data)}"

    records = [item for item in items if isinstance(item, dict)]
    unreadable = [item for item in items if isinstance(item, Unreadable)]
    listed = Counter(lost["__key__"] for entry in unreadable for lost in entry.where.get("lost", []))
    listed.update(entry.where["__key__"] for entry in unreadable if "__key__" in entry.where)
    contents = dict(samples) | mutated.appended
    keys = set(contents)
    for record in records:
        assert record["__url__"] == "fuzz.tar" and (record["__key__"] in keys or _in_file(record["__key__"], data))
        assert record.get("image_path", {}).get("bytes", b"") in data and record.get("text", "").encode() in data
    assert all(key in keys or _in_file(key, data) for key in listed)
    for entry in unreadable:
        assert entry.where["__url__"] == "fuzz.tar" and entry.reason.startswith(("tar_", "not_"))
        assert 0 <= entry.where["offset"] <= entry.where.get("end", entry.where["offset"]) <= len(data)

    forged = mutated.forged()
    for region in mutated.regions:
        if region.kind != "sample":
            continue
        exact = [
            record for record in records if record["__key__"] == region.key and _matches(record, contents[region.key])
        ]
        assert len(exact) <= 1, f"{region.key} came out twice"
        swallowed = any(start <= region.offset < end for start, end in extents)  # by a member the walk accepted
        if region.intact(data):
            excluded = "swallowed" if swallowed else "forged" if any(o < region.offset for o in forged) else ""
            event(f"an intact sample {'not checked: ' + excluded if excluded else 'checked'}")
        if region.intact(data) and not swallowed and not any(offset < region.offset for offset in forged):
            assert exact or listed[region.key], f"{region.key} is lost without a trace"

    # A tar stored as a member (not in sparse format 1.0, whose map comes first): never read as samples while
    # its member's header is intact (and not in the data of a member accepted before it), or is the one damage,
    # its size field intact.
    stored = [mutated.own_headers[span.name] for span in spans if span.name.endswith(".tar")]
    lone_flip = len(mutations) == 1 and mutations[0][0] == "flip" and not mutations[0][-1]
    if (
        (lone_flip or not forged)
        and all(span.style != "sparse-1.0" for span in spans if span.name.endswith(".tar"))
        and all(
            (
                region.intact(data)
                or lone_flip
                and data[region.offset + 124 : region.offset + 136] == region.original[124:136]
            )
            and not any(start <= region.offset < end for start, end in extents)
            for region in stored
        )
    ):
        assert not any(key.startswith("inner") for key in [record["__key__"] for record in records] + list(listed))
