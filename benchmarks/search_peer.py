"""The search a team would serve without Triton, side by side with ours, in one run.

The peer: FastAPI + uvicorn (`--peer-workers` processes), the build's query encoder (the
fine-tuned one, or the student a build serves in its place) through sentence-transformers /
PyTorch, and the same catalogue embeddings, BM25 (bm25s), candidates,
feedback head (ONNX Runtime) and fusion weights, through fusionrank's torch-free search
runtime. Ours: the Triton model repository `fusionrank build` wrote. Both are loaded by one
client program at the same concurrencies: HTTP/JSON for the peer, gRPC for Triton.

    .venv/bin/pip install -e '.[peer]'
    .venv/bin/python -m benchmarks.search_peer --run runs/relevance \
        --build build/homedepot_fused --queries 2000 --seconds 10

Writes benchmarks/reports/search_peer.md and .json. First checks the peer's quality: its
NDCG@10 on the run's dev queries must be within 0.005 of the served pipeline's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[1]
K = 10


class PeerSearch:
    """The peer's search: sentence-transformers encodes, fusionrank's runtime ranks."""

    def __init__(self, run: Path, build: Path):
        import torch
        from sentence_transformers import SentenceTransformer
        from threadpoolctl import threadpool_limits

        from fusionrank.core.fusion import FusionWeights
        from fusionrank.core.search.runtime import SearchRuntime
        from fusionrank.model_repository.config import model_of_step, served_version

        # One core a worker, for numpy's BLAS as for torch: as for Triton's model copies,
        # BLAS threads would busy-wait on the cores the other workers compute on.
        torch.set_num_threads(1)
        threadpool_limits(limits=1, user_api="blas")
        repository = build / "model_repository"
        # The build's query encoder: the run's, or the student the build serves in its place
        # (`fusionrank build --student`), so that the peer ranks as the build does.
        student = (json.loads((repository / "fusionrank.json").read_text())
                   .get("query_encoder") or {}).get("source")
        encoder = (ROOT / student) if student else run / "encoder" / "best"
        self.model = SentenceTransformer(str(encoder), device="cpu")
        self.model.max_seq_length = 32  # fusionrank's MAX_QUERY_TOKENS
        folder = served_version(repository, model_of_step(repository, "search",
                                                          "ScoreCandidates"))
        self.runtime = SearchRuntime.load(folder, threads=1)
        self.runtime.weights = FusionWeights.load(folder / "ranking.json")
        lines = (folder / "products.jsonl").read_text()
        self.ids = [json.loads(line)["product_id"] for line in lines.splitlines()]

    def vectors(self, queries: list[str]) -> np.ndarray:
        return self.model.encode(queries, normalize_embeddings=True, convert_to_numpy=True,
                                 batch_size=64).astype(np.float32)

    def search(self, queries: list[str], k: int = K) -> tuple[np.ndarray, np.ndarray]:
        return self.runtime.search(queries, self.vectors(queries), k)


def answer_without_delay() -> None:
    """TCP_NODELAY on every connection of this process, as uvicorn has with one worker.
    `uvicorn --workers N` hands each worker the listening socket through multiprocessing; the
    connections it accepts then have protocol number 0, and asyncio sets TCP_NODELAY only where
    it is IPPROTO_TCP (`asyncio.base_events._set_nodelay`). Without it, each response's body
    waits for the client's delayed ACK of its headers: 40 ms a request (measured)."""
    import asyncio.base_events

    def set_nodelay(sock: socket.socket) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    asyncio.base_events._set_nodelay = set_nodelay


def create_app():
    """The peer's web app (uvicorn's factory): POST /search {"query": ..., "k": ...}."""
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel, Field

    answer_without_delay()

    class Query(BaseModel):
        query: str = Field(min_length=1, max_length=256)
        k: int = Field(default=K, ge=1, le=100)

    peer = PeerSearch(Path(os.environ["PEER_RUN"]), Path(os.environ["PEER_BUILD"]))
    (Path(os.environ["PEER_READY"]) / str(os.getpid())).touch()  # this worker has loaded
    app = FastAPI()

    def search(request: Query) -> dict:
        if not request.query.strip():
            raise HTTPException(422, "query is empty or only whitespace")
        rows, scores = peer.search([request.query], request.k)
        return {"product_ids": [peer.ids[r] for r in rows[0]], "scores": scores[0].tolist()}

    # Annotations are strings here (`from __future__ import annotations`): give FastAPI the class.
    search.__annotations__ = {"request": Query, "return": dict}
    app.post("/search")(search)
    return app


async def load(send, queries: list[str], concurrency: int, seconds: float) -> dict:
    """A closed loop of `concurrency` callers for `seconds` (after one warm-up pass of them).
    `send(query)` makes one call and returns its decoded answer."""
    latencies_ms: list[float] = []

    async def timed(query: str, measured: bool) -> None:
        tick = time.perf_counter()
        await send(query)
        if measured:
            latencies_ms.append((time.perf_counter() - tick) * 1e3)

    elapsed = await harness.closed_loops_async(timed, queries, concurrency, seconds)
    return {"concurrency": concurrency,
            "throughput_qps": round(len(latencies_ms) / elapsed, 1),
            **harness.latency_percentiles(latencies_ms, (50, 99))}


async def load_triton(url: str, queries: list[str], levels: list[int], seconds: float):
    """Each call asks for what the peer answers, the K product ids and their scores, and
    decodes them: the request the SDK's plain `search` sends (DETAIL ids)."""
    import tritonclient.grpc.aio as grpcaio

    from fusionrank.client.search import search_inputs
    from fusionrank.core.search.contract import SEARCH_MODEL, Detail

    wanted = [grpcaio.InferRequestedOutput(spec.name) for spec in Detail.IDS.outputs]
    async with grpcaio.InferenceServerClient(url) as client:
        async def send(query: str) -> tuple[list[str], list[float]]:
            inputs = search_inputs([query], K, Detail.IDS, module=grpcaio)
            result = await client.infer(SEARCH_MODEL, inputs, outputs=wanted,
                                        client_timeout=60)
            return ([i.decode("utf-8") for i in result.as_numpy("PRODUCT_IDS")[0]],
                    result.as_numpy("SCORES")[0].tolist())

        return [await load(send, queries, c, seconds) for c in levels]


async def load_peer(url: str, queries: list[str], levels: list[int], seconds: float):
    import httpx

    # TCP_NODELAY: without it, a request's headers and body in two writes meet the server's
    # delayed ACK, and every call waits ~40 ms for nothing.
    transport = httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=max(levels)),
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(base_url=url, timeout=60, transport=transport) as client:
        async def send(query: str) -> tuple[list[str], list[float]]:
            answer = await client.post("/search", json={"query": query, "k": K})
            answer.raise_for_status()
            decoded = answer.json()
            return decoded["product_ids"], decoded["scores"]

        return [await load(send, queries, c, seconds) for c in levels]


def dev_quality(run: Path, build: Path, peer: PeerSearch) -> dict:
    """NDCG@10 and Recall@100 on the run's dev queries over the full catalogue: the peer
    (PyTorch query vectors) against the served path (the ONNX encoder the repository serves)."""
    from fusionrank.core.encoding import MAX_QUERY_TOKENS, OnnxEncoder, TextEncoder, TextTokenizer
    from fusionrank.model_repository.config import model_of_step, served_version
    from fusionrank.training.metrics import evaluate_ranking
    from fusionrank.training.search.data import SplitConfig, load_judgements

    manifest = json.loads((run / "run.json").read_text())
    judgements = load_judgements(manifest["data_file"], SplitConfig(**manifest["config"]["split"]))
    queries = judgements.ranked_queries("dev")
    repository = build / "model_repository"
    folder = served_version(repository, model_of_step(repository, "search", "EncodeQueries"))
    encoder = TextEncoder(TextTokenizer(folder / "tokenizer.json", MAX_QUERY_TOKENS),
                          OnnxEncoder(folder / "encoder.onnx"))
    # Catalogue rows of the build are the judgements' rows only if both read the same file.
    served_ids = peer.ids
    if served_ids != judgements.catalogue.ids:
        raise ValueError("the build's catalogue is not the run's: build with --catalogue "
                         "homedepot")
    served, peers = encoder.encode(queries), peer.vectors(queries)
    cosine = np.sum(served * peers, axis=1)
    out: dict = {"query_vector_cosine": {"min": float(cosine.min()), "mean": float(cosine.mean())}}
    for name, vectors in (("served (ONNX)", served), ("peer (PyTorch)", peers)):
        rows, scores = peer.runtime.search(queries, vectors, 100)
        out[name] = evaluate_ranking(judgements.qrels("dev"), queries, rows, scores)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--build", type=Path, required=True,
                        help="a build of the run over the Home Depot catalogue")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--port", type=int, default=0, help="the peer's port (0: a free one)")
    parser.add_argument("--peer-workers", default="1,2",
                        help="uvicorn worker processes of the peer, comma-separated: each count "
                             "is loaded in turn, and the best at concurrency 8 is the one "
                             "Triton is compared with")
    args = parser.parse_args()
    from fusionrank.app.serve import TritonServer, free_port

    levels = [int(c) for c in args.concurrency.split(",")]
    queries = harness.benchmark_queries(args.queries)
    quality = dev_quality(args.run, args.build, PeerSearch(args.run, args.build))
    print(json.dumps(quality, indent=1), file=sys.stderr)

    env = dict(os.environ, PEER_RUN=str(args.run.resolve()), PEER_BUILD=str(args.build.resolve()),
               PYTHONPATH=str(ROOT))
    peers: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in [int(w) for w in args.peer_workers.split(",")]:
            port = args.port or free_port()
            log = (Path(tmp) / f"peer{workers}.log").open("w")
            ready = Path(tmp) / f"ready{workers}"
            ready.mkdir()
            peer = subprocess.Popen([sys.executable, "-m", "uvicorn",
                                     "benchmarks.search_peer:create_app", "--factory",
                                     "--host", "127.0.0.1", "--port", str(port),
                                     "--workers", str(workers), "--log-level", "warning"],
                                    env=env | {"PEER_READY": str(ready)}, stdout=log,
                                    stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_for_peer(url, peer, ready, workers)
                peers[str(workers)] = asyncio.run(load_peer(url, queries, levels, args.seconds))
            finally:
                peer.terminate()
                peer.wait(30)
        with (Path(tmp) / "triton.log").open("w") as triton_log, \
                TritonServer(args.build / "model_repository", log=triton_log) as server:
            triton_results = asyncio.run(load_triton(server.grpc_url, queries, levels,
                                                     args.seconds))
    # The peer Triton is compared with: its best worker count at concurrency 8 (or the highest).
    compare_at = 8 if 8 in levels else levels[-1]
    best = max(peers, key=lambda w: next(r["throughput_qps"] for r in peers[w]
                                         if r["concurrency"] == compare_at))
    report = {**harness.stamp(), "queries": len(queries), "k": K, "dev_quality": quality,
              "peer_workers": int(best), "peers": peers,
              "triton": triton_results, "peer": peers[best]}
    harness.save_report("search_peer", report, markdown(report))
    return 0


def wait_for_peer(url: str, process: subprocess.Popen, ready: Path, workers: int,
                  timeout_s: float = 300) -> None:
    """Until every worker has loaded (each marks `ready`: one that is still loading would
    take the cores the first measurements need) and the peer answers."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the peer exited before it answered")
        try:
            if len(list(ready.iterdir())) >= workers and httpx.post(
                    f"{url}/search", json={"query": "drill", "k": 1}).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the peer did not answer within {timeout_s:.0f} s")


def markdown(r: dict) -> str:
    quality = harness.table(["query vectors", "NDCG@10", "Recall@100"],
                            [[name, f"{m['ndcg@10']:.4f}", f"{m['recall@100']:.4f}"]
                             for name, m in r["dev_quality"].items() if "ndcg@10" in m])
    cosine = r["dev_quality"]["query_vector_cosine"]
    workers = list(r["peers"])
    measured = ("throughput_qps", "p50_ms", "p99_ms")
    rows = harness.table(
        ["concurrency", "Triton q/s", "p50 ms", "p99 ms",
         *(column for w in workers for column in (f"peer ×{w} q/s", "p50 ms", "p99 ms")),
         f"Triton / peer ×{r['peer_workers']}"],
        [[t["concurrency"], *(t[key] for key in measured),
          *(r["peers"][w][i][key] for w in workers for key in measured),
          f"{t['throughput_qps'] / r['peer'][i]['throughput_qps']:.2f}"]
         for i, t in enumerate(r["triton"])])
    return harness.heading(
        "Search: Triton against a FastAPI + PyTorch peer", r,
        f"{r['queries']} distinct real Home Depot search terms, K = {r['k']}, one query per "
        "request;\n  one client program (a closed loop of callers per concurrency, 1 s warm-up): "
        "gRPC for Triton\n  (its response cache off), HTTP/JSON for the peer. Every call asks "
        "both for the same answer,\n  the K product ids and their scores, and decodes it.") + f"""
The peer: FastAPI + uvicorn (×N: N worker processes; {', '.join(workers)} loaded in turn), the
fine-tuned encoder through sentence-transformers / PyTorch (one thread a worker, for torch and
numpy's BLAS alike), and the same catalogue embeddings, BM25, candidates, feedback head and
fusion weights through fusionrank's search runtime. Ours: the Triton repository as built,
served without a response cache, so both compute every answer.

Dev quality over the full catalogue (the peer must be within 0.005 of the served path):

{quality}

(PyTorch and ONNX query vectors agree to a cosine of {cosine['min']:.6f} at worst,
{cosine['mean']:.6f} on average.)

{rows}

Triton / peer compares with the peer's best worker count at concurrency 8
(×{r['peer_workers']}).
"""


if __name__ == "__main__":
    sys.exit(main())
