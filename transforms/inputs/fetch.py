"""Reading an image's bytes from a local path, `file://`, http(s) or any Beam FileSystems URI.

Every failure becomes an `InputError` whose message names the location (redacted) and what happened,
never the file's or the server's content. Remote reads run under one deadline (`retries.py`), with
transient failures retried inside it; local files are read directly, but FIFOs and devices are refused
without blocking on them.
"""

from __future__ import annotations

import errno
import http.client
import os
import stat

from transforms import reasons
from transforms.inputs import http_get
from transforms.inputs.locations import HTTP_SCHEMES, AllowedPrefixes, local_path, redact, scheme_of
from transforms.inputs.retries import ReadAttempts, TransientError, run_before_deadline, with_retries
from transforms.reasons import InputError
from transforms.settings import ImageSettings

_DEFAULTS = ImageSettings()
_ANYWHERE = AllowedPrefixes(None)
_CHUNK = 1 << 20
# HTTP statuses that storage clients raise as exceptions (with a `code`) and that may pass.
_TRANSIENT_STATUSES = (408, 429, 500, 502, 503, 504)


def read_image_bytes(
    location: str,
    *,
    max_bytes: int = _DEFAULTS.max_image_bytes,
    timeout_secs: float = _DEFAULTS.http_timeout_secs,
    allowed: AllowedPrefixes = _ANYWHERE,
) -> bytes:
    """Reads at most `max_bytes` of the image at `location` (already joined to the image root)."""
    try:
        path = local_path(location)
    except ValueError as exc:
        raise InputError(reasons.IMAGE_UNREADABLE, str(exc)) from None
    if path is not None:
        return _read_local(allowed.local(path), path, max_bytes, follow_links=not allowed.confining)
    allowed.uri(location)
    attempts = ReadAttempts(timeout_secs)
    shown = redact(location)
    if scheme_of(location) in HTTP_SCHEMES:
        what = f"GET {shown}"

        def attempt() -> bytes:
            return http_get.get_image(location, max_bytes=max_bytes, attempts=attempts, allowed=allowed)
    else:
        what = shown

        def attempt() -> bytes:
            return _read_filesystems(location, shown, max_bytes, attempts)

    return run_before_deadline(lambda: with_retries(attempt, attempts, what), attempts, what)


def _read_local(path: str, as_given: str, max_bytes: int, *, follow_links: bool) -> bytes:
    """Reads a regular file; FIFOs, devices and directories are refused without blocking on them.

    When confined, `path` is the checked real path, opened without following a link that appeared since.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else os.O_NOFOLLOW))
    except FileNotFoundError:
        raise InputError(reasons.IMAGE_NOT_FOUND, f"{as_given} does not exist") from None
    except NotADirectoryError:
        raise InputError(reasons.IMAGE_NOT_FOUND, f"{as_given} does not exist (a folder in it is a file)") from None
    except OSError as exc:
        raise InputError(reasons.IMAGE_UNREADABLE, f"cannot open {as_given}: {_os_reason(exc)}") from None
    status = os.fstat(fd)
    mode = status.st_mode
    if stat.S_ISREG(mode) and status.st_size > max_bytes:  # refused without reading max_bytes of it first
        os.close(fd)
        raise InputError(reasons.IMAGE_TOO_LARGE, f"{as_given} is over the {max_bytes}-byte limit")
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise InputError(reasons.IMAGE_UNREADABLE, f"{as_given} is a folder, not an image file")
        raise InputError(reasons.IMAGE_UNREADABLE, f"{as_given} is not a regular file (a FIFO, socket or device)")
    with os.fdopen(fd, "rb") as stream:
        try:
            return check_size(stream.read(max_bytes + 1), as_given, max_bytes)
        except OSError as exc:
            raise InputError(reasons.IMAGE_UNREADABLE, f"cannot read {as_given}: {_os_reason(exc)}") from None


def _read_filesystems(uri: str, shown: str, max_bytes: int, attempts: ReadAttempts) -> bytes:
    """One attempt through Beam FileSystems; only a failed read pays the existence check that names it."""
    from apache_beam.io.filesystems import FileSystems  # Beam only for the schemes it serves

    try:
        chunks, size = [], 0
        with FileSystems.open(uri, compression_type="uncompressed") as stream:
            while size <= max_bytes:
                attempts.raise_if_cancelled()
                chunk = stream.read(min(_CHUNK, max_bytes + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        return check_size(b"".join(chunks), shown, max_bytes)
    except InputError:
        raise
    except Exception as exc:
        attempts.raise_if_cancelled()
        if _is_transient(exc):
            raise TransientError(f"{_describe(exc)}, which may pass") from None
        if _is_missing(exc) or not _exists(uri):
            raise InputError(reasons.IMAGE_NOT_FOUND, f"{shown} does not exist") from None
        raise InputError(reasons.IMAGE_UNREADABLE, f"cannot read {shown}: {_describe(exc)}") from None


def _exists(uri: str) -> bool:
    """Each scheme raises its own "not found"; this asks them all alike. True when even that fails."""
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.exists(uri)
    except Exception:
        return True


def check_size(data: bytes, shown: str, max_bytes: int) -> bytes:
    """`data`, unless it is over `max_bytes` (`image_too_large`); inline bytes are checked like fetched ones."""
    if len(data) > max_bytes:
        raise InputError(reasons.IMAGE_TOO_LARGE, f"{shown} is over the {max_bytes}-byte limit")
    return data


def _causes(exc: BaseException):
    """`exc`, what it wraps (`__cause__`, `__context__`, Beam's `exception_details`), and so on, once each."""
    seen, pending = set(), [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen or not isinstance(current, BaseException):
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]
        details = getattr(current, "exception_details", None)
        if isinstance(details, dict):
            pending += list(details.values())


def _status(exc: BaseException):
    """The HTTP status a storage client's exception carries (google-api-core's `code`, requests' response)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 100 <= code < 600:
        return code
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _is_transient(exc: BaseException) -> bool:
    transient_types = (ConnectionError, TimeoutError, http.client.IncompleteRead, *_third_party_transient_types())
    return any(isinstance(cause, transient_types) or _status(cause) in _TRANSIENT_STATUSES for cause in _causes(exc))


def _is_missing(exc: BaseException) -> bool:
    return any(isinstance(cause, FileNotFoundError) or _status(cause) in (404, 410) for cause in _causes(exc))


def _third_party_transient_types() -> tuple:
    """Network errors of the HTTP libraries under Beam's cloud file systems, where installed."""
    types: list = []
    try:
        import requests.exceptions as requests_errors

        types += [requests_errors.ConnectionError, requests_errors.Timeout, requests_errors.ChunkedEncodingError]
    except ImportError:
        pass
    try:
        import urllib3.exceptions as urllib3_errors

        types += [urllib3_errors.ProtocolError, urllib3_errors.TimeoutError]
    except ImportError:
        pass
    return tuple(types)


def _describe(exc: BaseException) -> str:
    """The kind of failure, from types and status codes only: exception messages can quote a server's answer."""
    causes = list(_causes(exc))
    for cause in causes:
        status = _status(cause)
        if status is not None:
            return f"{type(cause).__name__} (HTTP {status})"
    if isinstance(exc, ValueError) and "Unable to get filesystem" in str(exc):
        return "no Beam FileSystem reads this scheme (gs:// needs apache-beam[gcp])"
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno:
            return _os_reason(cause)
    return type(exc).__name__


def _os_reason(exc: OSError) -> str:
    """E.g. "permission denied (EACCES)": the system's words for the error, without any path or content."""
    name = errno.errorcode.get(exc.errno or 0)
    if name is None:
        return type(exc).__name__
    return f"{os.strerror(exc.errno).lower()} ({name})"
