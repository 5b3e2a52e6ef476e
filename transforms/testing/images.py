"""Real image files of every kind the scorer must handle, good and bad, written to a folder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from transforms import reasons

# What each file of `write_bad_images` must be scored with: 0.0 and this reason.
BAD_IMAGE_REASONS = {
    "corrupt.jpg": reasons.IMAGE_UNDECODABLE,
    "truncated.jpg": reasons.IMAGE_UNDECODABLE,
    "empty.png": reasons.IMAGE_UNDECODABLE,
    "text_as.png": reasons.IMAGE_UNDECODABLE,
    "a_directory.jpg": reasons.IMAGE_UNREADABLE,
    "bomb.png": reasons.IMAGE_TOO_LARGE,
}

# Good images whose original-LongCLIP preprocessing is `Image.open(p).convert("RGB")`.
GOOD_KINDS = (
    "rgb.jpg",
    "rgb.png",
    "rgba.png",
    "la.png",
    "palette.gif",
    "animated.gif",
    "cmyk.jpg",
    "bilevel.png",
    "grey.png",
    "grey.webp",
    "rgb.bmp",
    "rgb.tiff",
    "tiny_1x1.png",
    "wide_1000x12.png",
    "large_1800x1200.jpg",
    "palette_transparent.png",
    "grey16.png",
)


def _pattern(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth but distinct RGB picture, so that resampling differences would show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    channels = [
        127 + 120 * np.sin(x / max(width, 1) * rng.uniform(2, 9) + y / max(height, 1) * rng.uniform(1, 7) + c)
        for c in range(3)
    ]
    noise = rng.integers(-20, 20, (height, width, 3))
    return np.clip(np.stack(channels, axis=-1) + noise, 0, 255).astype(np.uint8)


def write_good_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(_pattern(96, 64, 1))
    paths = {name: folder / name for name in GOOD_KINDS}
    rgb.save(paths["rgb.jpg"], quality=90)
    Image.fromarray(_pattern(50, 70, 2)).save(paths["rgb.png"])
    rgba = Image.fromarray(_pattern(64, 64, 3)).convert("RGBA")
    rgba.putalpha(Image.fromarray(_pattern(64, 64, 4)[:, :, 0]))
    rgba.save(paths["rgba.png"])
    Image.fromarray(_pattern(40, 60, 5)).convert("LA").save(paths["la.png"])
    Image.fromarray(_pattern(64, 48, 6)).convert("P", palette=Image.Palette.ADAPTIVE).save(paths["palette.gif"])
    frames = [Image.fromarray(_pattern(48, 48, 10 + i)).convert("P", palette=Image.Palette.ADAPTIVE) for i in range(3)]
    frames[0].save(paths["animated.gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.fromarray(_pattern(60, 45, 7)).convert("CMYK").save(paths["cmyk.jpg"], quality=90)
    Image.fromarray(_pattern(64, 64, 8)[:, :, 0]).convert("1").save(paths["bilevel.png"])
    Image.fromarray(_pattern(33, 77, 9)[:, :, 1]).save(paths["grey.png"])
    Image.fromarray(_pattern(70, 30, 11)[:, :, 2]).save(paths["grey.webp"], lossless=True)
    Image.fromarray(_pattern(41, 29, 12)).save(paths["rgb.bmp"])
    Image.fromarray(_pattern(52, 52, 13)).save(paths["rgb.tiff"])
    Image.new("RGB", (1, 1), (200, 30, 90)).save(paths["tiny_1x1.png"])
    Image.fromarray(_pattern(1000, 12, 14)).save(paths["wide_1000x12.png"])
    Image.fromarray(_pattern(1800, 1200, 15)).save(paths["large_1800x1200.jpg"], quality=85)
    transparent = Image.fromarray(_pattern(32, 32, 16)).convert("P", palette=Image.Palette.ADAPTIVE)
    transparent.info["transparency"] = 0
    transparent.save(paths["palette_transparent.png"], transparency=0)
    # 16-bit greyscale (Pillow mode I;16) holding 8-bit values, as many scanners and converters write it.
    Image.fromarray(_pattern(48, 40, 17)[:, :, 0].astype(np.uint16)).save(paths["grey16.png"])
    return paths


def write_bad_images(folder: Path) -> dict[str, Path]:
    """Files that must each be scored 0.0 with a reason, never crash the pipeline."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    paths["corrupt.jpg"] = folder / "corrupt.jpg"
    paths["corrupt.jpg"].write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    buffer = io.BytesIO()
    Image.fromarray(_pattern(128, 128, 20)).save(buffer, "JPEG", quality=95)
    paths["truncated.jpg"] = folder / "truncated.jpg"
    paths["truncated.jpg"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    paths["empty.png"] = folder / "empty.png"
    paths["empty.png"].write_bytes(b"")
    paths["text_as.png"] = folder / "text_as.png"
    paths["text_as.png"].write_text("this is not an image\n")
    paths["a_directory.jpg"] = folder / "a_directory.jpg"
    paths["a_directory.jpg"].mkdir(exist_ok=True)
    paths["bomb.png"] = folder / "bomb.png"
    Image.new("1", (20_000, 10_000)).save(paths["bomb.png"])  # 200 Mpixel, a few KiB on disk
    return paths
