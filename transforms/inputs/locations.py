"""Where a record's image is (inline bytes, or a location), whether it may be read from there, and how to
name it in a message.

Records can come from anyone who may publish to the job's input, so their image locations are
untrusted: `AllowedPrefixes` confines them (after `..` and symbolic links are resolved), and `redact`
keeps URL credentials and signed-URL tokens out of every message. Standard library only.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, NamedTuple, Optional, Union
from urllib.parse import unquote, urlsplit, urlunsplit

from transforms import reasons
from transforms.reasons import InputError
from transforms.settings import image_prefixes

HTTP_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def image_source(value: object, image_root: Optional[str]) -> Union[str, bytes]:
    """The record's image field as inline bytes, or as a location to read (see `resolve_image_location`).

    The field may hold a location string, the image file's bytes, or a Hugging Face datasets image struct
    `{"bytes": ..., "path": ...}` (bytes win; without them, the path is the location).
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if _is_image_struct(value):
        data = value.get("bytes")
        if data is not None:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InputError(reasons.IMAGE_WRONG_TYPE, f"image bytes must be bytes, got {type(data).__name__}")
            return bytes(data)
        if value.get("path") is None:
            raise InputError(reasons.IMAGE_MISSING, "the image struct has neither bytes nor a path")
        value = value["path"]
    return resolve_image_location(value, image_root)


def without_image_bytes(value: Any) -> Any:
    """What an output record keeps of its image field: inline bytes become None, an image struct its path.

    Image bytes would bloat every output (and BigQuery's JSON column refuses them); a location is kept.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    if _is_image_struct(value):
        return value.get("path")
    return value


def _is_image_struct(value: object) -> bool:
    return isinstance(value, Mapping) and ("bytes" in value or "path" in value)


def resolve_image_location(location: object, image_root: Optional[str]) -> str:
    """Validates the record's image field and joins a relative path to `image_root`."""
    if location is None:
        raise InputError(reasons.IMAGE_MISSING, "the record has no image path")
    if not isinstance(location, str):
        raise InputError(reasons.IMAGE_WRONG_TYPE, f"image path must be a string, got {type(location).__name__}")
    location = location.strip()
    if not location:
        raise InputError(reasons.IMAGE_MISSING, "the image path is empty")
    if has_scheme(location) or os.path.isabs(location) or not image_root:
        return location
    if has_scheme(image_root):  # URIs join with "/" whatever the scheme, as Beam's FileSystems do
        return image_root + location if image_root.endswith("/") else f"{image_root}/{location}"
    return os.path.join(image_root, location)


def has_scheme(location: str) -> bool:
    return "://" in location


def scheme_of(location: str) -> str:
    return location.split("://", 1)[0].lower() if has_scheme(location) else ""


def local_path(location: str) -> Optional[str]:
    """The local path a location names: itself without a scheme, or a `file://` URI's path; None for any other
    scheme. Raises `ValueError` for a `file://` URI that names another host."""
    if not has_scheme(location):
        return location
    if scheme_of(location) != "file":
        return None
    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{redact(location)} names a file on host {parts.netloc!r}; file:// URIs are local")
    return unquote(parts.path)


HIDDEN = "***"  # what a secret reads as once redacted, here and in run records


def redact(location: str) -> str:
    """`location` for messages: URL user info and query values (signed-URL tokens) become `***`."""
    if not has_scheme(location):
        return location
    try:
        parts = urlsplit(location)
    except ValueError:
        return f"{scheme_of(location)}://(malformed URI)"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}={HIDDEN}" if sep else HIDDEN
        for name, sep, _ in (pair.partition("=") for pair in parts.query.split("&"))
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query if parts.query else "", ""))


class _UriPrefix(NamedTuple):
    scheme: str
    authority: Optional[str]  # None: any location of the scheme
    path: str


class AllowedPrefixes:
    """`allowed_image_prefixes`: local folders, `scheme://` and URI prefixes; None allows everything.

    A prefix is a folder: `https://cdn.example.com/images` allows `https://cdn.example.com/images/a.png`,
    not `.../images-private/a.png`. Local paths are compared after `..` and symbolic links are resolved,
    and URIs with `.` or `..` segments are refused, so neither escapes a prefix.
    """

    def __init__(self, text: Optional[str]):
        self.confining = text is not None
        entries = image_prefixes(text) if text is not None else ()
        local = [local_path(entry) for entry in entries if not has_scheme(entry) or scheme_of(entry) == "file"]
        self._folders = tuple(os.path.realpath(folder) for folder in local)
        self._uris = tuple(_uri_prefix(entry) for entry in entries if has_scheme(entry) and scheme_of(entry) != "file")

    def local(self, path: str) -> str:
        """The path to open: `path` itself when nothing is confined, else its real path inside a folder."""
        if not self.confining:
            return path
        real = os.path.realpath(path)
        for folder in self._folders:
            if real == folder or real.startswith(folder.rstrip(os.sep) + os.sep):
                return real
        raise InputError(reasons.IMAGE_NOT_ALLOWED, f"{path} is outside allowed_image_prefixes")

    def uri(self, uri: str) -> None:
        """Raises `image_not_allowed` unless `uri` is under one of the URI prefixes."""
        if not self.confining:
            return
        shown = redact(uri)
        try:
            candidate = _uri_prefix(uri)
        except ValueError:
            raise InputError(reasons.IMAGE_NOT_ALLOWED, f"{shown} is not a well-formed URI") from None
        segments = candidate.path.replace("\\", "/").split("/")
        if "." in segments or ".." in segments:
            raise InputError(reasons.IMAGE_NOT_ALLOWED, f"{shown} has '.' or '..' path segments")
        for prefix in self._uris:
            if prefix.scheme != candidate.scheme:
                continue
            if prefix.authority is None:
                return
            folder = prefix.path.rstrip("/")
            if prefix.authority == candidate.authority and (
                not folder or candidate.path == folder or candidate.path.startswith(folder + "/")
            ):
                return
        raise InputError(reasons.IMAGE_NOT_ALLOWED, f"{shown} is outside allowed_image_prefixes")


def _uri_prefix(uri: str) -> _UriPrefix:
    """Scheme, authority and path of a URI as compared: http(s) hosts lower-cased with their port, and
    paths percent-decoded (servers decode them too); other schemes' names are compared as written."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if not parts.netloc and parts.path in ("", "/"):
        return _UriPrefix(scheme, None, "")
    if scheme not in HTTP_SCHEMES:
        return _UriPrefix(scheme, parts.netloc, parts.path)
    if not parts.hostname:
        raise ValueError("no host")
    authority = f"{parts.hostname}:{parts.port or _DEFAULT_PORTS[scheme]}"  # .port raises ValueError when bad
    return _UriPrefix(scheme, authority, unquote(parts.path))
