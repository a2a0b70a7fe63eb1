"""The clients the query commands (search, recommend, sentiment) use: the gRPC SDK, or the
SDK's calls answered in this process by a built model repository, without a server.

    with LocalClient("build/model_repository") as client:       # FusionRankClient's methods
        hits = client.search("cordless drill", k=10)

Requests are built and results parsed by the very SDK code the gRPC client uses; only the
transport differs: tensors stay numpy arrays, and each ensemble runs through
`InProcessEnsemble` (its steps wired as its config wires them). A RequestError becomes the
InvalidRequestError the server's INVALID_ARGUMENT would. The CLI's `--repository` uses it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from fusionrank.client import FusionRankClient, InvalidRequestError, ModelNotServedError
from fusionrank.core.contract import RequestError
from fusionrank.model_repository.runner import InProcessEnsemble

# How a repository comes to serve each ensemble: the advice a missing model's message gives.
_REBUILD = ("then rebuild the repository (`fusionrank build`) and serve the new build "
            "(`fusionrank deploy --source DIR` to a running server, or restart `fusionrank serve`)")
HOW_TO_SERVE = {
    "sentiment": f"train one with `fusionrank train-sentiment` (it goes to runs/sentiment, "
                 f"where `fusionrank build` looks for it), {_REBUILD}",
    "recommend": f"train one with `fusionrank train-recommender`, {_REBUILD}",
    "search": "build a repository with `fusionrank build` and serve it (`fusionrank serve`)",
}


def not_served_message(error: ModelNotServedError) -> str:
    """The SDK's 'serves no X model', with how to get X served."""
    advice = HOW_TO_SERVE.get(error.model)
    return f"{error}: {advice}" if advice else str(error)


class _Tensor:
    """A request tensor that keeps its numpy array (tritonclient's InferInput serialises it)."""

    def __init__(self, name: str, shape: list[int], datatype: str):
        self.name, self.shape, self.datatype = name, shape, datatype
        self.array: np.ndarray | None = None

    def set_data_from_numpy(self, array: np.ndarray) -> None:
        self.array = array


class _Result:
    def __init__(self, tensors: dict[str, np.ndarray]):
        self._tensors = tensors

    def as_numpy(self, name: str) -> np.ndarray:
        return self._tensors[name]


DEFAULT_URL = "127.0.0.1:8001"
NUMPY_TRANSPORT = SimpleNamespace(InferInput=_Tensor)


class LocalClient(FusionRankClient):
    transport = NUMPY_TRANSPORT

    def __init__(self, repository: str | Path):
        self.url = f"in-process {repository}"
        self.repository = Path(repository)
        self._ensembles: dict[str, InProcessEnsemble] = {}

    def _infer(self, model: str, inputs: list, outputs: Sequence) -> _Result:
        if model not in self._ensembles:
            built = any(self.repository.glob("*/config.pbtxt"))  # else: read_config says
            if built and not (self.repository / model / "config.pbtxt").is_file():
                raise ModelNotServedError(model, f"the repository {self.repository}")
            self._ensembles[model] = InProcessEnsemble(self.repository, model)
        try:
            answer = self._ensembles[model]({tensor.name: tensor.array for tensor in inputs})
        except RequestError as error:
            raise InvalidRequestError(str(error)) from None
        return _Result(answer)

    def wait_ready(self, model: str = "search", timeout_s: float = 0.0) -> None:
        """Nothing to wait for: each ensemble's steps load on first use."""

    def close(self) -> None:
        self._ensembles.clear()


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a query command sends its request: a server, or a repository run in process."""
    parser.add_argument("--url", default=DEFAULT_URL, help="Triton gRPC address")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--repository", type=Path,
                        help="answer in this process from a built model repository (no server)")


def client_for(args: argparse.Namespace):
    """The SDK client the query commands use: gRPC, or in process with --repository."""
    if args.repository:
        return LocalClient(args.repository)
    return FusionRankClient(args.url, timeout_s=args.timeout)
