"""A `fusionrank` command run as the shopper's terminal would: a subprocess whose output is read
as it comes, waited on until it prints a line saying it is ready (bounded), killed if a test
leaves it running."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

FUSIONRANK = [sys.executable, "-m", "fusionrank.app.cli"]
READY_TIMEOUT_S = 120.0


@dataclass
class RunningCommand:
    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines)

    def read(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout)

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None, f"exited before printing {text!r}:\n" \
                                                f"{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout_s:.0f} s:\n" \
                                                f"{self.output()}"
            time.sleep(0.1)


@contextmanager
def fusionrank_process(*args: str, ready: str,
                       timeout_s: float = READY_TIMEOUT_S) -> Iterator[RunningCommand]:
    """`fusionrank ARGS...` started, and running once it printed `ready`."""
    process = subprocess.Popen([*FUSIONRANK, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    command = RunningCommand(process)
    reader = threading.Thread(target=command.read, daemon=True)
    reader.start()
    try:
        command.wait_for(ready, timeout_s)
        yield command
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=10)


TWIN_CONFIG = """\
name: "twin"
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
instance_group [ {{ count: {copies} kind: KIND_CPU }} ]
dynamic_batching {{ }}
"""

TWIN_MODEL = """\
import os
import site
import time

for _entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if _entry:
        site.addsitedir(_entry)

from fusionrank.model_repository.step import triton_model  # noqa: E402


class Twice:
    \"\"\"Y = 2 X, after {work_s} s of 'work' per batch: the copies are busy under load.\"\"\"

    def __init__(self, folder, parameters):
        pass

    def __call__(self, requests):
        time.sleep({work_s})
        return [{{"Y": request["X"] * 2}} for request in requests]


TritonPythonModel = triton_model(Twice)
"""


def write_twin_repository(folder: Path, copies: int = 2, work_s: float = 0.02) -> Path:
    """A model repository with one Python-backend model, `twin` (Y = 2 X), in `copies` model
    processes, run through the repository's own shim (`triton_model`): loads in about a
    second, so a test can kill and restart its processes many times."""
    model = folder / "twin"
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(TWIN_CONFIG.format(copies=copies))
    (model / "1" / "model.py").write_text(TWIN_MODEL.format(work_s=work_s))
    return folder


def twin_load(url: str, stop: threading.Event, answers: list[float],
              errors: list[str]) -> None:
    """One caller of `twin`, without pause until `stop`: keeps its copies busy."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with grpcclient.InferenceServerClient(url) as client:
        while not stop.is_set():
            x = grpcclient.InferInput("X", [1, 1], "FP32")
            x.set_data_from_numpy(np.full((1, 1), 1.5, np.float32))
            try:
                answers.append(float(client.infer("twin", [x]).as_numpy("Y")[0, 0]))
            except InferenceServerException as error:  # no retries: counted, then a pause
                errors.append(error.message() or str(error))
                time.sleep(0.05)
