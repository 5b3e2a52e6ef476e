"""Image bytes where the job read them: a member of a WebDataset shard, a cell of a Parquet file.

A scored row of a WebDataset job names its shard and sample (`__url__`, `__key__`, the member in its image
field); one of a Parquet job names its input file and row (`__url__`, `__row__`). These are read back
with the limits of any image read (`--max_image_bytes`, `--allowed_image_prefixes`, the deadline of
`--http_timeout_secs` for a shard's scan), and every failure is an `InputError` naming what was missing.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import time
from typing import Any, BinaryIO, Iterable, Optional

import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.io import parquet_rows
from pipeline.io.formats import DEFAULT_IMAGE_EXTENSIONS
from transforms import ImageSettings, InputError, reasons
from transforms.inputs.fetch import check_size
from transforms.inputs.locations import AllowedPrefixes, local_path, redact


def read_shard_images(url: str, wanted: Iterable[tuple[str, Optional[str]]], settings: ImageSettings) -> dict:
    """`(key, member name or None)` → the member's bytes or an `InputError`, for samples of the shard at `url`.

    A request with a name wants that member; without, the sample's first member with an image extension.
    The shard's headers are read in order (member data is skipped, not read) until every request is met,
    the shard ends, or the deadline passes.
    """
    wanted = set(wanted)
    found: dict = {}
    shown = redact(url)
    deadline = time.monotonic() + settings.http_timeout_secs
    try:
        with _open(url, settings) as stream:
            _scan(stream, wanted, found, settings.max_image_bytes, shown, deadline)
    except InputError as error:
        return {request: found.get(request, error) for request in wanted}
    return {request: found[request] if request in found else _not_in_shard(request, shown) for request in wanted}


def _not_in_shard(request: tuple[str, Optional[str]], shown: str) -> InputError:
    key, name = request
    what = f"member {name}" if name else f"image of sample {key}"
    return InputError(reasons.IMAGE_NOT_FOUND, f"shard {shown} has no {what}")


def _scan(stream: BinaryIO, wanted: set, found: dict, max_bytes: int, shown: str, deadline: float) -> None:
    by_name = {name: (key, name) for key, name in wanted if name}
    by_key = {key: (key, None) for key, name in wanted if not name}
    try:
        tar = tarfile.open(fileobj=stream, mode="r:")
        while len(found) < len(wanted):
            if time.monotonic() > deadline:
                raise InputError(reasons.IMAGE_TIMEOUT, f"gave up looking through shard {shown}: it took too long")
            member = tar.next()
            if member is None:
                return
            tar.members.clear()  # tarfile keeps every header it read; a shard can have millions
            request = by_name.get(member.name)
            key, extension = _split_name(member.name)
            if request is None and key in by_key and extension in DEFAULT_IMAGE_EXTENSIONS:
                request = by_key[key]
            if request is None or request in found or not member.isfile():
                continue
            found[request] = _member_data(stream, member, max_bytes, f"{member.name} in shard {shown}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(reasons.IMAGE_UNREADABLE, f"shard {shown} cannot be read: {type(exc).__name__}") from None


def _member_data(stream: BinaryIO, member: tarfile.TarInfo, max_bytes: int, shown: str) -> Any:
    if member.issparse():
        return InputError(reasons.IMAGE_UNREADABLE, f"{shown} is a sparse member")
    if member.size > max_bytes:
        return InputError(reasons.IMAGE_TOO_LARGE, f"{shown} is over the {max_bytes}-byte limit")
    position = stream.tell()
    stream.seek(member.offset_data)
    data = stream.read(member.size)
    stream.seek(position)
    return check_size(data, shown, max_bytes)


def _split_name(name: str) -> tuple[Optional[str], str]:
    """`part/000001.jpg` → (`part/000001`, `jpg`), as the job's WebDataset reader keys samples."""
    folder, base = posixpath.split(name)
    stem, dot, extension = base.partition(".")
    if not stem or not dot:
        return None, ""
    return posixpath.join(folder, stem) if folder else stem, extension.lower()


def read_parquet_cell(url: str, row: int, column: str, settings: ImageSettings) -> Any:
    """The value of `column` in row `row` of the Parquet file at `url` (what the job read as the image)."""
    shown = redact(url)
    try:
        path = _check_allowed(url, settings, "Parquet file")
        return parquet_rows.read_cell(path or url, row, column)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(reasons.IMAGE_NOT_FOUND, f"Parquet file {shown} does not exist") from None
    except LookupError as exc:
        raise InputError(reasons.IMAGE_NOT_FOUND, f"Parquet file {shown}: {exc}") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        message = f"Parquet file {shown} cannot be read: {type(exc).__name__}"
        raise InputError(reasons.IMAGE_UNREADABLE, message) from None


def _check_allowed(url: str, settings: ImageSettings, what: str) -> Optional[str]:
    """The local path to open (checked to be a regular file), or None for a URI; raises `InputError`."""
    allowed = AllowedPrefixes(settings.allowed_image_prefixes)
    try:
        path = local_path(url)
    except ValueError as exc:
        raise InputError(reasons.IMAGE_UNREADABLE, str(exc)) from None
    if path is None:
        allowed.uri(url)
        return None
    path = allowed.local(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(reasons.IMAGE_NOT_FOUND, f"{what} {url} does not exist") from None
    except OSError as exc:
        raise InputError(reasons.IMAGE_UNREADABLE, f"cannot open {what} {url}: {type(exc).__name__}") from None
    if not stat.S_ISREG(mode):
        raise InputError(reasons.IMAGE_UNREADABLE, f"{what} {url} is not a regular file")
    return path


def _open(url: str, settings: ImageSettings) -> BinaryIO:
    path = _check_allowed(url, settings, "shard")
    if path is not None:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    try:
        return FileSystems.open(url, compression_type=CompressionTypes.UNCOMPRESSED)
    except FileNotFoundError:
        raise InputError(reasons.IMAGE_NOT_FOUND, f"shard {redact(url)} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - no such bucket, no access, a scheme Beam lacks
        raise InputError(reasons.IMAGE_UNREADABLE, f"cannot open {redact(url)}: {type(exc).__name__}") from None
