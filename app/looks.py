"""A look taken every few seconds on a thread of its own, until stopped: what `fusionrank serve`'s
watches (model_watch.py, stub_watch.py, compaction_watch.py) share.

    looks = Looks("model-watch", 1.0, watch.check, failed=lambda error: say(...))
    looks.start() ... looks.stop()   # stop waits for a look under way to end
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Looks:
    """Calls `look` every `interval_s` on a daemon thread named `name`. A look that raises is
    passed to `failed` and the looks go on: the next one may find the server back (a restart
    under way), and a watch that ended on one error would leave the server unwatched."""

    def __init__(self, name: str, interval_s: float, look: Callable[[], object],
                 failed: Callable[[Exception], None]):
        self.interval_s, self.look, self.failed = interval_s, look, failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.look()
            except Exception as error:
                self.failed(error)
