"""Bench inputs: real JPEG files on disk and captions of known token lengths, made deterministically."""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from transforms.inputs.tokenizer import LongCLIPTokenizer
from transforms.testing.datasets import write_shard

_WORDS = (
    "a the red blue green old small large wooden stone bright dark quiet busy street market river bridge "
    "house window door tree sky cloud boat sail lake hill road car bicycle dog cat bird child woman man "
    "table chair lamp book shelf cup plate flower garden fence roof tower light shadow morning evening "
    "near behind under above beside across while with and of on in at stands sits walks looks holds"
).split()
SHORT_MAX_TOKENS = 77


def write_images(folder: Path, count: int, size: tuple[int, int] = (640, 480)) -> list[Path]:
    """`count` distinct COCO-sized JPEGs (smooth colour fields plus noise), reused if already there."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)

    def write(index: int) -> Path:
        path = folder / f"image_{width}x{height}_{index:05d}.jpg"
        if not path.exists():
            rng = np.random.default_rng(index)
            phases = [x / width * rng.uniform(2, 9) + y / height * rng.uniform(1, 7) + c for c in range(3)]
            pixels = 127 + 120 * np.sin(np.stack(phases, axis=-1)) + rng.integers(-20, 20, (height, width, 3))
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(partial, format="JPEG", quality=90)
            partial.replace(path)
        return path

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        return list(pool.map(write, range(count)))


def captions(count: int, mix: str, seed: int = 0) -> list[str]:
    """`mix`: "short" (at most 77 tokens), "long" (100 to 240 tokens) or "mixed" (alternating)."""
    tokenizer = LongCLIPTokenizer()
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        want_short = mix == "short" or (mix == "mixed" and len(out) % 2 == 0)
        low, high = (8, SHORT_MAX_TOKENS) if want_short else (100, 240)
        words = rng.randint(low * 3 // 4, high * 3 // 4)
        text = f"photo {len(out)}: " + " ".join(rng.choice(_WORDS) for _ in range(words))
        if low <= len(tokenizer(text).ids) <= high:
            out.append(text)
    return out


def records(
    images: list[Path],
    texts: list[str],
    *,
    captions_per_image: int = 1,
    repeated_fraction: float = 0.0,
    seed: Optional[int] = 0,
) -> list[dict]:
    """One record per caption. Consecutive `captions_per_image` records share an image (COCO-style);
    `repeated_fraction` of the records reuse an image already listed instead of a new one."""
    rng = random.Random(seed)
    out, next_image, used = [], 0, []
    for index, text in enumerate(texts):
        if index % captions_per_image == 0:
            if used and rng.random() < repeated_fraction:
                image = rng.choice(used[-4:])
            else:
                image = images[next_image % len(images)]
                next_image += 1
                used.append(image)
        out.append({"id": index, "image_path": str(image), "text": text})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """`records` as a JSONL file, images by path (the job's default input)."""
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def write_webdataset(path: Path, records: list[dict]) -> Path:
    """The same `records` as one WebDataset shard in img2dataset's layout: each image file's bytes inline,
    the caption as `.txt`, the id in `.json`."""
    members = []
    for record in records:
        key = f"{record['id']:09d}"
        members += [
            (f"{key}.jpg", Path(record["image_path"]).read_bytes()),
            (f"{key}.json", json.dumps({"id": record["id"]}).encode()),
            (f"{key}.txt", record["text"].encode()),
        ]
    write_shard(path, members)
    return path
