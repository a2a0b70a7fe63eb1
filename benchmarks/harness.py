"""What every benchmark shares: the run's stamp (command, machine, date), the report files, the
Markdown they are written in, latency percentiles, the query sets, closed loops of callers and
the server's memory.

The scripts run as modules from the repository root, so that they import this one by its
package name: `.venv/bin/python -m benchmarks.soak --seconds 60`.

Imports stay light here (the standard library, numpy, fusionrank.core): benchmarks/gpu_check.py
runs on a GPU machine whose Python has little else; what needs more imports it where used.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fusionrank.core.machine import describe_machine

REPORTS = Path(__file__).parent / "reports"
ROOT = Path(__file__).resolve().parents[1]  # the repository

# --- the run's stamp and the report files ----------------------------------------------------


def machine() -> str:
    return describe_machine()


def command() -> str:
    """The command line that ran this benchmark, as it is typed: `python -m benchmarks.soak
    --seconds 60` (a script run by its path keeps its path)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = f"-m {spec.name}" if spec is not None else sys.argv[0]
    return " ".join(["python", program, *sys.argv[1:]])


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def stamp() -> dict[str, str]:
    """The keys every report starts with: when, how and where it was measured."""
    return {"date": now(), "command": command(), "machine": machine()}


def portable(text: str) -> str:
    """`text` with this machine's paths as any checkout reads them: the repository's relative
    to it, a temporary folder's under $TMPDIR (gone after the run: its name only tells), a
    folder beside the repository's as ../ (where ../shared is)."""
    # Only where a path starts (/work/tmp/x is not $TMPDIR/x because /tmp/ is inside it).
    start = r"(?<![\w./-])"
    text = re.sub(start + re.escape(f"{ROOT}/"), "", text)
    text = re.sub(start + re.escape(f"{tempfile.gettempdir()}/"), "$TMPDIR/", text)
    return re.sub(start + re.escape(f"{ROOT.parent}/"), "../", text)


def save_report(name: str, report: dict, text: str, folder: Path = REPORTS) -> None:
    """A benchmark's figures as `name`.json and its report as `name`.md (printed too), the
    paths in both written `portable`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(portable(json.dumps(report, indent=2)) + "\n")
    (folder / f"{name}.md").write_text(portable(text))
    print(text)


# --- Markdown ---------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: the header, its rule, then one line a row (each cell as str() writes
    it; format numbers before)."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def heading(title: str, report: dict, *more: str) -> str:
    """The report's title and the list every report opens with: its command, machine and date
    (from `stamp()`), then `more` items, each a line or a few."""
    items = [f"Command: `{report['command']}`", f"Machine: {report['machine']}",
             f"Date: {report['date']}", *more]
    return f"# {title}\n\n" + "\n".join(f"- {item}" for item in items) + "\n"


# --- latency ----------------------------------------------------------------------------------


def latency_percentiles(ms: Sequence[float], points: Sequence[float] = (50, 95, 99),
                        digits: int = 2) -> dict[str, float]:
    """{"p50_ms": …} at each point of the samples (milliseconds), rounded to `digits`;
    numpy's linear interpolation between the closest ranks. Empty when there are no samples."""
    if len(ms) == 0:
        return {}
    values = np.percentile(np.asarray(ms, dtype=np.float64), points)
    return {f"p{point:g}_ms": round(float(value), digits)
            for point, value in zip(points, values, strict=True)}


# --- query sets -------------------------------------------------------------------------------


def benchmark_queries(count: int, seed: int = 0) -> list[str]:
    """Distinct real Home Depot search terms, in a fixed random order."""
    from fusionrank.core.datasets import read_homedepot

    terms = read_homedepot().search_term.str.strip().drop_duplicates().tolist()
    rng = np.random.default_rng(seed)
    return [terms[i] for i in rng.permutation(len(terms))[:count]]


def zipf_replay(queries: list[str], requests: int, exponent: float, seed: int = 1) -> list[str]:
    """`requests` queries drawn with P(the query of popularity rank r) ∝ r^-exponent: the
    head of a real query log repeats, its tail does not."""
    weights = 1.0 / np.arange(1, len(queries) + 1) ** exponent
    rng = np.random.default_rng(seed)
    return [queries[i] for i in rng.choice(len(queries), size=requests, p=weights / weights.sum())]


def catalogue_queries(repository: Path, count: int, seed: int = 0) -> list[str]:
    """Distinct short queries from a served catalogue's titles (their first two or three
    words): for measurements that need queries the server answers, not relevance judgements."""
    from fusionrank.core import artefacts
    from fusionrank.core.search.contract import SEARCH_MODEL
    from fusionrank.model_repository.config import model_of_step, served_version

    folder = served_version(repository, model_of_step(repository, SEARCH_MODEL, "Rank"))
    titles = [json.loads(line)["title"] for line in
              (folder / artefacts.PRODUCTS).read_text(encoding="utf-8").splitlines()]
    rng = np.random.default_rng(seed)
    queries: dict[str, None] = {}
    for i in rng.permutation(len(titles)):
        words = titles[i].lower().split()[:2 + int(i) % 2]
        if words:
            queries.setdefault(" ".join(words)[:200])
        if len(queries) == count:
            break
    return list(queries)


class FreshQueries:
    """Queries that never repeat in a run ("cordless drill 17"), so that no response cache
    answers one. Safe to share between threads: itertools.count hands each number out once."""

    def __init__(self, *words: str):
        self.words, self.serial = words, itertools.count()

    def next(self) -> str:
        n = next(self.serial)
        return f"{self.words[n % len(self.words)]} {n}"


# --- closed loops of callers ------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    start: float  # time.monotonic()
    end: float
    error: str | None = None  # "ErrorClass: message"; None when answered
    kind: str = ""  # what was called, where a loop mixes calls

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else self.error.split(":", 1)[0]


class ClosedLoop:
    """`callers` threads, each making its next call as soon as the last returned (a closed
    loop: callers wait for their answers), from `with` until its end. Each thread runs
    `caller(loop)`, which opens its own client and calls `with loop.call(): ...` for as long
    as `loop.running`; every call's start, end and failure lands in `calls`.

    Failures of the classes in `failures` are recorded and the loop goes on; any other
    exception ends that caller's thread (a bug in the benchmark, not the server's answer).
    """

    def __init__(self, callers: int, caller: Callable[[ClosedLoop], object],
                 failures: type[BaseException] | tuple[type[BaseException], ...] = Exception):
        self.failures = failures
        self.calls: list[Call] = []  # list.append is atomic: the threads share it unlocked
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=caller, args=(self,)) for _ in range(callers)]

    @property
    def running(self) -> bool:
        return not self.stopped.is_set()

    @contextmanager
    def call(self, kind: str = "") -> Iterator[None]:
        """Times the call made inside the `with`; a failure is recorded, not raised."""
        start, error = time.monotonic(), None
        try:
            yield
        except self.failures as failure:
            error = f"{type(failure).__name__}: {failure}"
        self.calls.append(Call(start, time.monotonic(), error, kind))

    def __enter__(self) -> ClosedLoop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()


async def closed_loops_async(send: Callable[[str, bool], Awaitable[object]], queries: list[str],
                             concurrency: int, seconds: float, warm_up_s: float = 1.0) -> float:
    """`concurrency` callers in closed loops on one event loop, through `queries` in turn:
    `warm_up_s` of calls `send(query, False)`, then `seconds` of `send(query, True)` (the
    measured ones). Returns the measured window's length in seconds."""
    position = itertools.count()

    async def caller(deadline: float, measured: bool) -> None:
        while time.perf_counter() < deadline:
            await send(queries[next(position) % len(queries)], measured)

    warm_up = time.perf_counter() + warm_up_s
    await asyncio.gather(*(caller(warm_up, False) for _ in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(caller(start + seconds, True) for _ in range(concurrency)))
    return time.perf_counter() - start


# --- the server's memory ----------------------------------------------------------------------


def family(root: int) -> list:
    """A process and all its descendants (Triton's model processes), as psutil.Process
    objects: the process alone where it ends while its children are listed."""
    import psutil

    top = psutil.Process(root)
    try:
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [top]


def process_rss_mib(root: int) -> tuple[float, float]:
    """Resident memory of a process alone, and with all its descendants (Triton's model
    processes), in MiB; processes that end while they are counted count as nothing."""
    import psutil

    def rss(process: psutil.Process) -> int:
        try:
            return process.memory_info().rss
        except psutil.NoSuchProcess:
            return 0

    sizes = [rss(process) for process in family(root)]
    return sizes[0] / 2**20, sum(sizes) / 2**20


def process_memory_mib(root: int) -> dict[str, float]:
    """RSS and PSS of a process and its descendants, in MiB. RSS counts a page shared by two
    model processes (a memory-mapped artefact) once in each; PSS splits it between them."""
    import psutil

    total = {"rss": 0, "pss": 0}
    for process in family(root):
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total["rss"] += info.rss
        total["pss"] += info.pss
    return {name: round(value / 2**20) for name, value in total.items()}


def resident_by_file(root: int, at_least_mib: float = 10) -> list[dict]:
    """Each process of the tree with its resident memory by mapping (/proc/PID/smaps through
    psutil): a mapped file by its base name, "[anon]" and "[heap]" as the kernel names them,
    shared libraries together as "[libraries]"; mappings under `at_least_mib` left out.
    What RSS counts for each process, and what PSS splits: which artefacts every model copy
    holds resident."""
    import psutil

    processes = []
    for process in family(root):
        try:
            name, maps = process.name(), process.memory_maps(grouped=True)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        files: dict[str, dict[str, float]] = {}
        for mapping in maps:
            path = mapping.path or "[anon]"
            key = "[libraries]" if ".so" in Path(path).name else (
                Path(path).name if path.startswith("/") else path)
            entry = files.setdefault(key, {"rss": 0.0, "pss": 0.0})
            entry["rss"] += mapping.rss / 2**20
            entry["pss"] += mapping.pss / 2**20
        processes.append({"pid": process.pid, "name": name, "mib": {
            key: {k: round(v) for k, v in entry.items()}
            for key, entry in sorted(files.items(), key=lambda item: -item[1]["rss"])
            if entry["rss"] >= at_least_mib}})
    return processes


def process_tree_rss_mib(root: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    return process_rss_mib(root)[1]


class PeakMemory(threading.Thread):
    """The highest resident memory of a process tree, sampled every `every_s` (half a second
    by default) from `start()` to `stop()` (which returns it, in MiB)."""

    def __init__(self, pid: int, every_s: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.peak_mib, self._stop_event = pid, 0.0, threading.Event()
        self.every_s = every_s

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            self.peak_mib = max(self.peak_mib, process_tree_rss_mib(self.pid))

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak_mib


class PeakMemoryShares(PeakMemory):
    """PeakMemory's sampling, of RSS and PSS both (`peak`, a dict, once stopped); PSS every
    `pss_every_s` (every sample by default). A PSS sample walks every page table of the tree
    (22 ms of CPU for a 45,782-product server): ten a second cost its searches a tenth of their
    throughput on 2 vCPU, where an RSS sample (a counter the kernel keeps) costs nothing
    measurable."""

    def __init__(self, pid: int, every_s: float = 0.5, pss_every_s: float | None = None):
        super().__init__(pid, every_s)
        self.pss_every_s = every_s if pss_every_s is None else pss_every_s

    def run(self) -> None:
        self.peak = {"rss": 0.0, "pss": 0.0}
        pss_due = 0.0
        while not self._stop_event.wait(self.every_s):
            if time.monotonic() >= pss_due:
                pss_due = time.monotonic() + self.pss_every_s
                now = process_memory_mib(self.pid)
            else:
                now = {"rss": round(process_tree_rss_mib(self.pid))}
            self.peak |= {k: max(self.peak[k], now[k]) for k in now}


def load_average() -> float:
    """The machine's 1-minute load average: above ~0.5 on 2 vCPU, something else was running."""
    return os.getloadavg()[0]
