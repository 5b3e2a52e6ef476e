"""A corpus of hostile and unlucky records: odd formats, servers that stall, trickle, loop or fail once,
redirects off http or to other hosts, metadata addresses, files outside the allowed folders, credentials.

`write_corpus` writes it as JSONL and returns what each record must come out with, and the secrets that
must appear in no output field.
"""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from PIL import Image

from tests.support.http_servers import BASIC_PASSWORD, BASIC_USER, SECRET_BODY, ImageServer, SilentServer
from transforms import reasons as r

SECRET_FILE_CONTENT = "SECRET-FILE-CONTENT-91c2"
SECRET_TOKEN = "SECRETSIGNATURE0123"
MALFORMED = [b"not json", b"[1, 2]"]


class Corpus(NamedTuple):
    path: Path
    expected: dict  # id -> reason code, or None when it must be scored
    stalled: list  # ids whose reads never end
    secrets: list  # strings no output may contain
    allowed_prefixes: str
    image_root: Path


def write_corpus(folder: Path, server: ImageServer, silent: SilentServer, good_images: dict) -> Corpus:
    allowed = folder / "allowed"
    outside = folder / "outside"
    allowed.mkdir(parents=True)
    outside.mkdir()
    for name in ("rgb.jpg", "rgb.png", "palette.gif", "grey.webp", "cmyk.jpg"):
        (allowed / name).write_bytes(good_images[name].read_bytes())
    (outside / "secret.png").write_bytes(good_images["rgb.png"].read_bytes())
    (outside / "secret.txt").write_text(SECRET_FILE_CONTENT)
    (allowed / "link-out.png").symlink_to(outside / "secret.png")
    (allowed / "folder.png").mkdir()
    (allowed / "secret-inside.png").write_text(SECRET_FILE_CONTENT)
    (allowed / "token.ppm").write_bytes(b"P6\n" + SECRET_FILE_CONTENT.encode() + b" 16\n255\n" + b"\0" * 768)
    (allowed / "picture.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    for kind in ("ICO", "TGA"):
        Image.new("RGB", (8, 8), (9, 9, 9)).save(allowed / f"picture.{kind.lower()}", kind)
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(png, "PNG")
    (allowed / "truncated.png").write_bytes(png.getvalue()[:-40])
    (allowed / "empty.png").write_bytes(b"")

    url = server.url
    key = uuid.uuid4().hex  # fresh "fail once" paths for every corpus
    credentials = f"{BASIC_USER}:{quote(BASIC_PASSWORD, safe='')}"
    rows: list[tuple[str, str, str | None]] = [
        # (id, image location, expected reason)
        *((f"local/{name}", name, None) for name in ("rgb.jpg", "rgb.png", "palette.gif", "grey.webp", "cmyk.jpg")),
        ("file-uri", f"file://{allowed}/rgb.png", None),
        ("http-good", f"{url}/img/rgb.png", None),
        ("http-basic-auth", f"http://{credentials}@127.0.0.1:{server.port}/private/rgb.png", None),
        ("http-once-500", f"{url}/once/500/{key}a/rgb.jpg", None),
        ("http-once-reset", f"{url}/once/reset/{key}b/rgb.jpg", None),
        ("http-once-429", f"{url}/once/429/{key}c/rgb.jpg", None),
        ("http-once-503", f"{url}/once/503/{key}d/palette.gif", None),
        ("http-redirect-chain", f"{url}/chain/3/rgb.png", None),
        ("stall-headers-1", f"{url}/stall-headers", r.IMAGE_TIMEOUT),
        ("stall-headers-2", f"{url}/stall-headers?2", r.IMAGE_TIMEOUT),
        ("trickle-1", f"{url}/trickle/large_1800x1200.jpg", r.IMAGE_TIMEOUT),
        ("trickle-2", f"{url}/trickle/large_1800x1200.jpg?2", r.IMAGE_TIMEOUT),
        ("hang-1", f"{url}/hang", r.IMAGE_TIMEOUT),
        ("hang-2", f"{url}/hang?2", r.IMAGE_TIMEOUT),
        ("silent-1", f"{silent.url}/a.png", r.IMAGE_TIMEOUT),
        ("silent-2", f"{silent.url}/b.png", r.IMAGE_TIMEOUT),
        ("after-stalls", f"{url}/img/rgb.jpg?after", None),
        ("http-404-signed", f"{url}/status/404?X-Goog-Signature={SECRET_TOKEN}", r.IMAGE_NOT_FOUND),
        ("http-403", f"{url}/status/403", r.IMAGE_UNREADABLE),
        ("http-503-always", f"{url}/status/503?always", r.IMAGE_UNAVAILABLE),
        (
            "http-wrong-password",
            f"http://{BASIC_USER}:{SECRET_TOKEN}@127.0.0.1:{server.port}/private/rgb.png",
            r.IMAGE_UNREADABLE,
        ),
        ("http-not-an-image", f"{url}/not-an-image", r.IMAGE_UNDECODABLE),
        ("http-redirect-loop", f"{url}/loop", r.IMAGE_UNREADABLE),
        ("redirect-ftp", f"{url}/redirect?to={quote('ftp://127.0.0.1/a.png', safe='')}", r.IMAGE_NOT_ALLOWED),
        ("redirect-file", f"{url}/redirect?to={quote(f'file://{outside}/secret.txt', safe='')}", r.IMAGE_NOT_ALLOWED),
        (
            "redirect-other-host",
            f"{url}/redirect?to={quote(f'http://localhost:{server.port}/img/rgb.png', safe='')}",
            r.IMAGE_NOT_ALLOWED,
        ),
        (
            "redirect-metadata",
            f"{url}/redirect?to={quote('http://169.254.169.254/latest/', safe='')}",
            r.IMAGE_NOT_ALLOWED,
        ),
        ("metadata", "http://169.254.169.254/computeMetadata/v1/instance/", r.IMAGE_NOT_ALLOWED),
        ("metadata-as-number", "http://2852039166/computeMetadata/v1/", r.IMAGE_NOT_ALLOWED),
        ("metadata-ipv6-mapped", "http://[::ffff:169.254.169.254]/latest/", r.IMAGE_NOT_ALLOWED),
        ("link-local", "http://169.254.1.1/a.png", r.IMAGE_NOT_ALLOWED),
        ("other-scheme", "ftp://127.0.0.1/a.png", r.IMAGE_NOT_ALLOWED),
        ("outside-absolute", str(outside / "secret.png"), r.IMAGE_NOT_ALLOWED),
        ("outside-missing", str(outside / "missing.png"), r.IMAGE_NOT_ALLOWED),
        ("outside-dotdot", "../outside/secret.png", r.IMAGE_NOT_ALLOWED),
        ("outside-symlink", "link-out.png", r.IMAGE_NOT_ALLOWED),
        ("outside-file-uri", f"file://{outside}/secret.txt", r.IMAGE_NOT_ALLOWED),
        ("etc-passwd", "/etc/passwd", r.IMAGE_NOT_ALLOWED),
        ("inside-missing", "missing.png", r.IMAGE_NOT_FOUND),
        ("inside-folder", "folder.png", r.IMAGE_UNREADABLE),
        ("inside-text-file", "secret-inside.png", r.IMAGE_UNDECODABLE),
        ("ppm-with-token", "token.ppm", r.IMAGE_UNDECODABLE),
        ("eps", "picture.eps", r.IMAGE_UNDECODABLE),
        ("ico", "picture.ico", r.IMAGE_UNDECODABLE),
        ("tga", "picture.tga", r.IMAGE_UNDECODABLE),
        ("truncated", "truncated.png", r.IMAGE_UNDECODABLE),
        ("empty-file", "empty.png", r.IMAGE_UNDECODABLE),
    ]
    records = [{"id": row_id, "image_path": location, "text": "a red square"} for row_id, location, _ in rows]
    records += [
        {"id": "text-zero-width", "image_path": "rgb.png", "text": "\u200b\u200c\u200d\ufeff"},
        {"id": "text-control", "image_path": "rgb.png", "text": "\x00\x07\x1b"},
    ]
    expected = {row_id: reason for row_id, _, reason in rows}
    expected.update({"text-zero-width": r.TEXT_EMPTY, "text-control": r.TEXT_EMPTY})
    lines = [json.dumps(record).encode() for record in records] + MALFORMED
    path = folder / "adversarial.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    prefixes = f"{allowed}, {url}/, {silent.url}/, http://169.254.169.254/, http://2852039166/, http://169.254.1.1/"
    stalled = [row_id for row_id, _, reason in rows if reason == r.IMAGE_TIMEOUT]
    secrets = [SECRET_BODY, SECRET_FILE_CONTENT, SECRET_TOKEN, BASIC_PASSWORD, "SECRETTOKEN"]
    return Corpus(path, expected, stalled, secrets, prefixes, allowed)
