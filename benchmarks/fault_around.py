"""How much of a memory-mapped file a few random reads make resident in the reading process:
the figure behind scale.md's note on RSS (a read fault maps neighbouring pages that are already
in the page cache, the kernel's fault-around, so sparse reads of a cached file make most of it
resident in every process that maps it).

    python -m benchmarks.fault_around FILE [--rows 20000] [--row-bytes 1536]

Reads one byte of `--rows` random rows of `--row-bytes` each, once with the default advice and
once after madvise(MADV_RANDOM), and prints the pages read and the MiB resident in the mapping.
Read the file once beforehand (cat FILE > /dev/null) to measure a cached file, as a server that
has been up a while has.
"""

from __future__ import annotations

import argparse
import mmap
import os
from pathlib import Path

import numpy as np

from benchmarks.harness import resident_by_file


def resident_mib(path: Path) -> int:
    """MiB of `path` resident in this process's mappings."""
    mine = resident_by_file(os.getpid(), at_least_mib=0)[0]  # (the process, then children)
    return mine["mib"].get(path.name, {"rss": 0})["rss"]


def touched(path: Path, rows: int, row_bytes: int, advice: int | None, seed: int = 0) -> dict:
    with path.open("rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            if advice is not None:
                mapped.madvise(advice)
            count = len(mapped) // row_bytes
            picked = np.random.default_rng(seed).choice(count, min(rows, count), replace=False)
            pages = {int(row) * row_bytes // mmap.PAGESIZE for row in picked}
            for row in picked:
                mapped[int(row) * row_bytes]
            return {"advice": "MADV_RANDOM" if advice is not None else "default",
                    "rows_read": len(picked), "pages_read_mib": len(pages) * mmap.PAGESIZE >> 20,
                    "resident_mib": resident_mib(path.resolve())}
        finally:
            mapped.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--row-bytes", type=int, default=1536)  # a float32 384-d embedding
    args = parser.parse_args(argv)
    for advice in (None, mmap.MADV_RANDOM):
        print(touched(args.file, args.rows, args.row_bytes, advice))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
