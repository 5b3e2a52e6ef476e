"""Real dataset files as the tools people use write them: WebDataset shards in img2dataset's layout, and a
loopback HTTP server for LAION-style Parquet whose `url` column points at images."""

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
from typing import Iterator, Optional, Sequence

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
