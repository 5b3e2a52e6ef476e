"""Small inline thumbnails of the rows a report shows, read as the scoring transform reads images.

An image that cannot be read gives its reason instead (the page shows a placeholder): a report never
fails because of one image. Images are read on a few threads, each bounded in bytes, pixels and time.
"""

from __future__ import annotations

import base64
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Optional

from transforms import ImageSettings, InputError
from transforms.inputs.fetch import read_image_bytes
from transforms.inputs.images import decode_image
from transforms.inputs.locations import AllowedPrefixes, resolve_image_location

_LOGGER = logging.getLogger(__name__)

THUMBNAIL_PIXELS = 160
THREADS = 8


class Thumbnail(NamedTuple):
    data_uri: Optional[str]  # a JPEG as a data: URI, or None
    error: Optional[str]  # why there is none


def thumbnail(image: Any, settings: ImageSettings, size: int = THUMBNAIL_PIXELS) -> Thumbnail:
    """A JPEG thumbnail at most `size` pixels on a side, from a location (path, URI, http(s) URL) or bytes."""
    try:
        if isinstance(image, (bytes, bytearray)):
            data = bytes(image)
        else:
            location = resolve_image_location(image, settings.image_root)
            data = read_image_bytes(
                location,
                max_bytes=settings.max_image_bytes,
                timeout_secs=settings.http_timeout_secs,
                allowed=AllowedPrefixes(settings.allowed_image_prefixes),
            )
        picture = decode_image(data, max_pixels=settings.max_image_pixels)
        picture.thumbnail((size, size))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
    except InputError as error:
        return Thumbnail(None, str(error))
    except Exception as error:  # whatever else goes wrong with one image, the report goes on
        _LOGGER.warning("No thumbnail for %r: %s", image, error)
        return Thumbnail(None, f"{type(error).__name__}: {error}")
    return Thumbnail("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), None)


def thumbnails(images: list, settings: ImageSettings) -> list[Thumbnail]:
    """`thumbnail` of each, in order, read concurrently."""
    if not images:
        return []
    with ThreadPoolExecutor(min(THREADS, len(images)), thread_name_prefix="thumbnail") as pool:
        return list(pool.map(lambda image: thumbnail(image, settings), images))
