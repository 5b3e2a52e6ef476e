"""Real dataset files as the tools people use write them: WebDataset shards in img2dataset's layout (and the tar
formats other tools write: GNU long names, PAX headers, GNU sparse members, with helpers that damage them at
known places), and a loopback HTTP server for LAION-style Parquet whose `url` column points at images."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Sequence, Union

from PIL import Image


def write_shard(path: Path, members: Sequence[tuple[str, bytes]]) -> dict[str, int]:
    """Writes a tar shard member by member, as webdataset's `TarWriter` (used by img2dataset) does; returns
    each member's header offset, for tests that damage the shard at a known place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o444
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        return {member.name: member.offset for member in tar}


BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE  # tar writers pad an archive to a multiple of this
# How a member's headers are written: plain ustar, GNU (a long name in an `L` member), PAX (an `x` header with
# its path), or a GNU sparse file (old GNU `S` header, or PAX sparse format 0.0, 0.1 or 1.0) with one hole.
MEMBER_STYLES = ("ustar", "gnu", "pax", "sparse-gnu", "sparse-0.0", "sparse-0.1", "sparse-1.0")
SPARSE_HOLE = 1 << 20  # the hole a sparse member is written with, after the first half of its data


class Span(NamedTuple):
    """Where one member of a shard lies: its first header block (a PAX or long-name header, if any), its own
    header, its data and the end of its padded data."""

    name: str
    start: int
    header: int
    data: int
    size: int  # bytes stored at `data` (a sparse member's map, for sparse format 1.0, and its data)
    end: int
    style: str


def shard_bytes(members: Sequence[Union[tuple[str, bytes], tuple[str, bytes, str]]]) -> tuple[bytes, list[Span]]:
    """A tar shard in memory, each member `(name, data)` or `(name, data, style)` (one of MEMBER_STYLES; plain
    ustar by default, GNU for names too long for it), with its end-of-archive marker padded to a record.
    Returns the bytes and where each member lies."""
    out, spans = bytearray(), []
    for name, data, *style in members:
        kind = style[0] if style else "ustar"
        blocks, stored = (
            _sparse_blocks(name, data, kind.removeprefix("sparse-")) if kind.startswith("sparse") else (None, data)
        )
        if blocks is None:
            blocks = _header_blocks(name, len(data), kind)
        start, header = len(out), len(out) + len(blocks) - BLOCK
        out += blocks + stored + bytes(-len(stored) % BLOCK)
        spans.append(Span(name, start, header, header + BLOCK, len(stored), len(out), kind))
    return bytes(out + end_of_archive(len(out))), spans


def end_of_archive(offset: int) -> bytes:
    """The end-of-archive marker a tar writer puts at `offset`: two zero blocks, padded to a whole record."""
    return bytes(BLOCK * 2 + -(offset + BLOCK * 2) % RECORD)


def _header_blocks(name: str, size: int, style: str, typeflag: bytes = tarfile.REGTYPE, pax=None) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, 1_700_000_000, 0o444, typeflag
    if style == "pax":
        info.pax_headers = {"path": name, **(pax or {})}
        return info.tobuf(tarfile.PAX_FORMAT)
    try:  # ustar stores a name of up to 256 bytes in two fields, split at a slash; else GNU's long name
        return info.tobuf(tarfile.USTAR_FORMAT if style == "ustar" else tarfile.GNU_FORMAT)
    except ValueError:
        return info.tobuf(tarfile.GNU_FORMAT)


def _sparse_blocks(name: str, data: bytes, version: str) -> tuple[bytes, bytes]:
    """A GNU sparse member, as GNU tar 1.34 writes one: its header blocks and what is stored after them. The
    file is `data` with a hole of SPARSE_HOLE bytes after its first half (in whole blocks) and one at its end."""
    half = len(data) // 2 // BLOCK * BLOCK  # GNU tar stores each chunk from a block boundary
    chunks = [(0, half)] if half else []
    chunks += [(half + SPARSE_HOLE, len(data) - half), (len(data) + SPARSE_HOLE + BLOCK, 0)]
    real = chunks[-1][0]
    if version == "gnu":
        header = bytearray(_header_blocks(name, len(data), "gnu", tarfile.GNUTYPE_SPARSE))
        at = len(header) - BLOCK
        for index, (offset, length) in enumerate(chunks):
            header[at + 386 + 24 * index : at + 410 + 24 * index] = b"%011o\0%011o\0" % (offset, length)
        header[at + 483 : at + 495] = b"%011o\0" % real
        return bytes(with_checksum(header, at)), data
    sparse_name = f"./GNUSparseFile.0/{name}"
    if version == "0.0":
        pax = {"GNU.sparse.size": str(real), "GNU.sparse.numblocks": str(len(chunks))}
        records = b"".join(_pax_record(k, v) for k, v in pax.items())
        for offset, length in chunks:
            records += _pax_record("GNU.sparse.offset", str(offset)) + _pax_record("GNU.sparse.numbytes", str(length))
        header = _header_blocks(name, len(data), "ustar")
        return raw_header("./PaxHeaders/" + name[-80:], len(records), tarfile.XHDTYPE) + pad(records) + header, data
    if version == "0.1":
        flat = ",".join(str(number) for chunk in chunks for number in chunk)
        pax = {
            "GNU.sparse.size": str(real),
            "GNU.sparse.numblocks": str(len(chunks)),
            "GNU.sparse.name": name,
            "GNU.sparse.map": flat,
        }
        return _header_blocks(sparse_name, len(data), "pax", pax=pax), data
    sparse_map = pad(("\n".join(str(n) for chunk in [(len(chunks),)] + chunks for n in chunk) + "\n").encode())
    pax = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": name, "GNU.sparse.realsize": str(real)}
    return _header_blocks(sparse_name, len(sparse_map) + len(data), "pax", pax=pax), sparse_map + data


def _pax_record(keyword: str, value: str) -> bytes:
    body = f" {keyword}={value}\n".encode()
    length = len(body)
    while length != len(body) + len(str(length)):
        length = len(body) + len(str(length))
    return str(length).encode() + body


def pax_records(fields: dict) -> bytes:
    """PAX extended header records (`"%d %s=%s\\n"`) for `fields`."""
    return b"".join(_pax_record(keyword, str(value)) for keyword, value in fields.items())


def pad(data: bytes) -> bytes:
    """`data` padded with zeros to whole blocks."""
    return data + bytes(-len(data) % BLOCK)


def raw_header(name: str, size: int, typeflag: bytes = tarfile.REGTYPE, *, checksum: bool = True) -> bytes:
    """One ustar header block, any `size` (octal, or GNU base-256 when it does not fit: huge or negative)."""
    block = bytearray(BLOCK)
    block[0:100] = name.encode()[:100].ljust(100, b"\0")
    block[100:124] = b"0000444\0" + b"0000000\0" * 2
    block[136:148] = b"%011o\0" % 1_700_000_000
    block[156:157] = typeflag
    block[257:265] = tarfile.POSIX_MAGIC
    block[124:136] = size_field(size)
    return bytes(with_checksum(block)) if checksum else bytes(block)


def size_field(size: int) -> bytes:
    """A header's 12-byte size field: octal when it fits, else GNU base-256 (two's complement when negative),
    clamped to what 11 bytes hold."""
    if 0 <= size < 8**11:
        return b"%011o\0" % size
    size = min(max(size, -(256**11)), 256**11 - 1)
    return (b"\x80" if size >= 0 else b"\xff") + (size % 256**11).to_bytes(11, "big")


def with_checksum(block: Union[bytes, bytearray], at: int = 0) -> bytearray:
    """`block` with the header at `at` given its valid checksum."""
    block = bytearray(block)
    header = block[at : at + BLOCK]
    header[148:156] = b" " * 8
    block[at + 148 : at + 156] = b"%06o\0 " % sum(header)
    return block


def set_size(data: bytes, header: int, size: int, *, checksum: bool = True) -> bytes:
    """`data` with the size field of the header at byte `header` set to `size`, its checksum recomputed."""
    block = bytearray(data)
    block[header + 124 : header + 136] = size_field(size)
    return bytes(with_checksum(block, header) if checksum else block)


def img2dataset_sample(key: str, image: Optional[bytes], caption: Optional[str], url: str = "") -> list:
    """One sample's members, as img2dataset writes them (webdataset writes a sample's extensions sorted)."""
    members = []
    if image is not None:
        width, height = Image.open(io.BytesIO(image)).size
        members.append((f"{key}.jpg", image))
    else:
        width = height = None
    meta = {
        "url": url or f"https://example.com/{key}.jpg",
        "caption": caption,
        "key": key.rsplit("/", 1)[-1],
        "status": "success",
        "error_message": None,
        "width": width,
        "height": height,
        "sha256": hashlib.sha256(image or b"").hexdigest(),
    }
    members.append((f"{key}.json", json.dumps(meta).encode()))
    if caption is not None:
        members.append((f"{key}.txt", caption.encode()))
    return members


def jpeg(path: Path) -> bytes:
    """The image at `path` re-encoded as JPEG, as img2dataset stores images."""
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """An HTTP server on loopback serving `folder`'s files (404 for the others); yields its base URL."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
