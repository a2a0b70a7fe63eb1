"""Compact a live catalogue in the background: `fusionrank serve` starts `fusionrank catalogue
compact` by itself once the segments or the dead rows pass a threshold, as Lucene merges its
segments by itself (docs/live_catalogue.md "Compaction").

    with CompactionWatch(server, CompactionPolicy()):   # a started TritonServer
        ...

Every `interval_s` the watch asks the catalogue model for its status (one gRPC call, where the
repository serves one); when `CompactionPolicy.due` gives a reason, it starts the compaction as
a process of its own, one at a time: it lowers its own CPU priority and its memory (a build's)
goes back when it ends, neither of which a thread of `serve` could do. It says on stderr why it
started one and how it ended; its output goes to `<build>/live/compaction.log`. A compaction
that failed is tried again only after `retry_after_s`, not at the next look.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fusionrank.app.deploy import model_configs
from fusionrank.app.looks import Looks
from fusionrank.app.serve import TritonServer
from fusionrank.core.live.segments import LIVE_FOLDER
from fusionrank.core.search.contract import CATALOGUE_MODEL

INTERVAL_S = 30.0
RETRY_AFTER_S = 600.0
LOG_FILE = "compaction.log"


@dataclass(frozen=True)
class CompactionPolicy:
    """When a live catalogue is worth compacting. Each dead row costs every query and every
    state build until it is folded away; each segment is a folder that every search process
    reads and holds. A compaction costs a build (1.5 minutes of niced CPU at 45,782 products,
    benchmarks/reports/live_catalogue.md), so it waits for enough of either."""

    dead_share: float = 0.2  # of the rows, replaced or deleted products' rows
    # Served change sets: a stream of 10 a second reaches it in 17 minutes. Sets of price
    # changes alone leave no dead row, and each of their segments costs a search process
    # little (a record table, a file read once), so this count calls a compaction rarely.
    segments: int = 10_000

    def __post_init__(self) -> None:
        if not 0.0 < self.dead_share <= 1.0:
            raise ValueError(f"dead_share must be in (0, 1], not {self.dead_share}")
        if self.segments < 1:
            raise ValueError(f"segments must be at least 1, not {self.segments}")

    def due(self, rows: int, products: int, segments: int) -> str | None:
        """Why a catalogue of `rows` (dead ones included), `products` live and `segments`
        served should be compacted now; None: not yet."""
        dead = 1.0 - products / rows if rows else 0.0
        if dead >= self.dead_share:
            return f"{dead:.0%} of its {rows:,} rows are dead (at {self.dead_share:.0%} or more)"
        if segments >= self.segments:
            return f"it serves {segments:,} segments (at {self.segments:,} or more)"
        return None


@dataclass
class CompactionWatch:
    server: TritonServer
    policy: CompactionPolicy = field(default_factory=CompactionPolicy)
    interval_s: float = INTERVAL_S
    retry_after_s: float = RETRY_AFTER_S
    say: Callable[[str], None] = field(
        default=lambda line: print(f"fusionrank serve: {line}", file=sys.stderr, flush=True))
    ended: list[int] = field(default_factory=list)  # each compaction's exit status, in order

    def __post_init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._failed_at = -float("inf")
        self._looks = Looks("compaction-watch", self.interval_s, self.check, lambda error: self.say(
            f"the compaction watch failed a look: {error}"))

    @property
    def log_path(self) -> Path:
        return Path(self.server.repository).resolve().parent / LIVE_FOLDER / LOG_FILE

    def __enter__(self) -> CompactionWatch:
        self._looks.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._looks.stop()
        if self._process is not None and self._process.poll() is None:
            # The server it deploys to is stopping: the rollout would fail, and the next
            # compaction starts from the state as it is.
            self._process.terminate()
            self._process.wait(timeout=60)

    def check(self) -> None:
        """One look: the running compaction's end, or whether to start one."""
        if self._process is not None:
            code = self._process.poll()
            if code is None:
                return
            self._process = None
            self.ended.append(code)
            if code:
                self._failed_at = time.monotonic()
            self.say(f"the background compaction {'failed' if code else 'ended'}: "
                     f"{self._last_line()} (its log: {self.log_path})")
            return
        if time.monotonic() - self._failed_at < self.retry_after_s:
            return
        if CATALOGUE_MODEL not in model_configs(self.server.repository):
            return
        from fusionrank.client import FusionRankClient

        with FusionRankClient(self.server.grpc_url, timeout_s=10) as client:
            status = client.catalogue_status()
        reason = self.policy.due(status.rows, status.products, status.segments)
        if reason is not None:
            self.start(reason)

    def start(self, reason: str) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("w") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "fusionrank.app.cli", "catalogue", "compact",
                 "--url", self.server.grpc_url, "--repository", str(self.server.repository)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.say(f"compacting the live catalogue in the background: {reason}")

    def _last_line(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"
