"""`python -m bench.large_images` (`make bench-large-images`): peak memory of the job on images at the pixel limit.

Eight 9000x9000 PNGs (81 Mpixels each, under the default 89.5-Mpixel `--max_image_pixels`) against eight
640x480 JPEGs, through `python -m pipeline` with a tiny model, one fresh process per run, at several
`--prepare_threads`; then one such image decoded as the job decodes it against Pillow's `convert("RGB")`,
each in a process of its own. Peaks are VmHWM; the large images are cached beside the bench checkpoints.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench import memory, models, workload

SIDE = 9000


def large_pngs(count: int, side: int = SIDE) -> list[Path]:
    """`count` distinct side x side RGB PNGs (smooth gradients: quick to write, small on disk)."""
    folder = models.cache_dir() / "large_images"
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.arange(side, dtype=np.uint16)
    paths = []
    for index in range(count):
        path = folder / f"large_{side}_{index}.png"
        if not path.exists():
            red = np.broadcast_to(((ramp + index * 17) % 256)[:, None], (side, side))
            green = np.broadcast_to(((ramp * 3) % 256)[None, :], (side, side))
            blue = np.full((side, side), index * 25 % 256, np.uint16)
            pixels = np.stack([red, green, blue], axis=-1).astype(np.uint8)
            partial = path.with_suffix(".tmp.png")
            Image.fromarray(pixels).save(partial, compress_level=1)
            partial.replace(path)
        paths.append(path)
    return paths


def _decode_peak(path: Path, how: str) -> float:
    """Peak RSS (MiB) of a fresh process that decodes `path` once, the job's way or `convert("RGB")`'s."""
    code = (
        "import sys; from pathlib import Path; from bench.memory import peak_rss_mib\n"
        "from PIL import Image; from transforms.inputs.images import decode_image\n"
        "data = Path(sys.argv[1]).read_bytes(); base = peak_rss_mib()\n"
        "image = decode_image(data) if sys.argv[2] == 'job' else Image.open(sys.argv[1]).convert('RGB')\n"
        "print(peak_rss_mib() - base)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path), how], check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.large_images", description=__doc__)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--threads", default="1,2,4", help="--prepare_threads values to run")
    args = parser.parse_args()
    tiny = models.checkpoint("tiny")
    large = large_pngs(args.images)
    with tempfile.TemporaryDirectory() as folder:
        small = workload.write_images(Path(folder) / "small", args.images)
        peaks = {}
        for name, images in (("small", small), ("large", large)):
            path = Path(folder) / f"{name}.jsonl"
            path.write_text("".join(json.dumps({"image_path": str(p), "text": "a picture"}) + "\n" for p in images))
            for threads in [int(t) for t in args.threads.split(",")] if name == "large" else [4]:
                peaks[name, threads], seconds = memory.measure(
                    path, Path(folder) / f"out-{name}-{threads}", tiny, "--prepare_threads", str(threads)
                )
                print(
                    f"  {args.images} {name} images, --prepare_threads {threads}: peak {peaks[name, threads]:.0f} MiB"
                    f" ({seconds:.0f} s)",
                    flush=True,
                )
    base = peaks["small", 4]
    for threads in sorted(t for kind, t in peaks if kind == "large"):
        extra = peaks["large", threads] - base
        print(
            f"  {SIDE}x{SIDE} PNGs, {threads} decoding threads: +{extra:.0f} MiB over small images, "
            f"{extra / min(threads, args.images):.0f} MiB per thread"
        )
    job, convert = _decode_peak(large[0], "job"), _decode_peak(large[0], "convert")
    print(
        f"  one {SIDE}x{SIDE} RGB PNG decoded: the job's way +{job:.0f} MiB, Image.open().convert('RGB') "
        f"+{convert:.0f} MiB ({convert / job:.2f}x)"
    )


if __name__ == "__main__":
    main()
