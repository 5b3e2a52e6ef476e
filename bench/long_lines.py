"""`python -m bench.long_lines`: one long JSONL line read by Beam 2.77's text reader and by the job's reader.

Beam's `_TextSource` (what `ReadFromText` reads with) grows its buffer by concatenation, so a line of n
bytes costs O(n^2 / buffer); `pipeline.io.lines` reads each byte once. Both read the same file in this one
process, side by side, best of `--repeats`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from apache_beam import coders
from apache_beam.io import textio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.range_trackers import OffsetRangeTracker

from pipeline.io.lines import read_lines


def _beam(path: Path) -> int:
    source = textio._TextSource(str(path), 0, CompressionTypes.UNCOMPRESSED, True, coders.BytesCoder(), validate=False)
    tracker = OffsetRangeTracker(0, path.stat().st_size)
    return sum(len(line) for line in source.read_records(str(path), tracker))


def _ours(path: Path) -> int:
    with path.open("rb") as stream:
        return sum(len(line) for line in read_lines(stream, 0, None, 1 << 40))


def _best(read, path: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        read(path)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.long_lines", description=__doc__)
    parser.add_argument("--megabytes", default="5,20", help="lengths of the long line to try, in MB")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print("| line length | Beam ReadFromText's reader | pipeline.io.lines | ratio |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for megabytes in (int(value) for value in args.megabytes.split(",")):
            path = Path(folder) / f"long-{megabytes}.jsonl"
            path.write_bytes(b'{"text": "' + b"word " * (megabytes * 200_000) + b'"}\n{"b": 1}\n')
            assert _beam(path) == _ours(path)
            beam, ours = _best(_beam, path, args.repeats), _best(_ours, path, args.repeats)
            print(f"| {megabytes} MB | {beam:.2f} s | {ours:.3f} s | {beam / ours:.0f}x |")


if __name__ == "__main__":
    main()
