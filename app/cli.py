"""`fusionrank`: one command line, one subcommand per job.

    fusionrank build   --catalogue online_retail --out build
    fusionrank serve   --repository build/model_repository
    fusionrank deploy  --source build-next/model_repository   (zero-downtime rollout; status)
    fusionrank search  "cordless drill" -k 10              (search: train, evaluate, search)
    fusionrank recommend --history 85123A,71053 -k 10      (recommend: train-recommender, recommend)
    fusionrank sentiment "Love this dress"                 (sentiment: train-sentiment, sentiment)
    fusionrank export-tensorrt

Each feature's commands live in its own module (app/<feature>.py); the ones that
serve every feature (build, serve, export-tensorrt) live here.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
from pathlib import Path

from fusionrank.app import catalogue, deploy, recommend, search, sentiment, web
from fusionrank.app.supervision import MAX_RESTARTS, STEADY_S, keep_serving
from fusionrank.model_repository.search.ensemble import LAYOUTS, ServingOptions

DEFAULT_BUILD = Path("build")
EMBEDDING_CACHE = Path("runs/cache/catalogue")  # `build --embedding-cache` default
DEFAULT_CACHE_MIB = 256


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def add_build(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "build", help="export the encoder, embed a catalogue and write the Triton model repository")
    parser.add_argument("--catalogue", default="online_retail",
                        help="a catalogue file (.csv/.parquet/.jsonl[.gz]) or a shared dataset: "
                             "online_retail, homedepot (default: online_retail)")
    parser.add_argument("--datasets",
                        help="folder of the shared datasets (default ../shared/datasets)")
    parser.add_argument("--lenient", action="store_true",
                        help="skip bad catalogue rows (each counted, reported) instead of failing")
    parser.add_argument("--run", dest="run_dir", type=Path,  # `run` is the command's function
                        help="a finished `fusionrank train` run to serve (default: the newest "
                             "under runs/; with none, a short default run is trained first)")
    parser.add_argument("--pretrained", action="store_true",
                        help="serve the pretrained encoder alone (no trained run)")
    parser.add_argument("--student", default="auto", metavar="PATH|auto|off",
                        help="a `fusionrank distil` student of the served run's encoder (e.g. "
                             "runs/relevance/student/best): it encodes the queries, the index "
                             "keeps the run's encoder's embeddings; auto (default): the "
                             "student `fusionrank evaluate --student` chose to serve "
                             "(RUN/student/choice.json), else off: the run's encoder")
    parser.add_argument("--model", help="with --pretrained: a local Hugging Face encoder folder "
                                        "(default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_BUILD)
    parser.add_argument("--retrieval", choices=["auto", "exact", "ann"],
                        default=ServingOptions.retrieval,
                        help="dense retrieval: exact over every product, or a FAISS ANN "
                             "index; auto: ANN from the catalogue size where the sweep found "
                             "it faster (benchmarks/reports/ann_sweep.md)")
    parser.add_argument("--embedding-cache", type=Path, default=EMBEDDING_CACHE,
                        metavar="FOLDER",
                        help="where each title's embedding is kept (by its text and the "
                             "encoder), so a rebuild embeds only new or changed titles and an "
                             "interrupted build resumes")
    parser.add_argument("--recommender", type=Path, default=Path("runs/recommender"),
                        help="trained recommender (train-recommender --out); trained first "
                             "when absent")
    parser.add_argument("--sentiment", type=Path, default=Path("runs/sentiment"),
                        help="trained review sentiment model (train-sentiment --out); served "
                             "as the sentiment ensemble when present")
    parser.add_argument("--reviews", type=Path,
                        help="reviews file (the shared dataset's columns): adds each product's "
                             "review sentiment to the catalogue, with the sentiment model")
    parser.add_argument("--no-recommend", action="store_true",
                        help="serve search only, without the recommend ensemble")
    parser.add_argument("--encoder-instances", type=int,
                        default=ServingOptions.encoder_instances,
                        help="copies of the query_encoder model (tokenizer + encoder; layouts "
                             "two and steps)")
    parser.add_argument("--max-queue-delay-us", type=int,
                        default=ServingOptions.max_queue_delay_us,
                        help="how long the dynamic batcher waits to fill a batch")
    parser.add_argument("--precision", choices=["fp32", "int8"],
                        default=ServingOptions.precision,
                        help="query encoder precision (int8, the default: 8-bit weights and int8 "
                             "arithmetic; the catalogue is embedded in FP32 either way)")
    parser.add_argument("--threads", type=int, default=ServingOptions.onnx_threads,
                        help="ONNX Runtime threads per model copy")
    parser.add_argument("--ranker-instances", type=int,
                        default=ServingOptions.ranker_instances,
                        help="copies of the model that ranks: search_steps (layout one: the "
                             "whole pipeline) or ranker (layout two: retrieval, candidates, "
                             "features, feedback head, fusion)")
    parser.add_argument("--layout", choices=LAYOUTS, default=ServingOptions.layout,
                        help="how the search steps are grouped into models: one (all in "
                             "search_steps, the default), two (query_encoder and ranker), "
                             "steps (a model each)")
    parser.add_argument("--ranker-threads", type=int, default=None,
                        help="ONNX Runtime and FAISS threads per copy of the ranker model "
                             "(layouts two and steps; default: --threads)")
    parser.add_argument("--no-response-cache", action="store_true",
                        help="leave the search ensemble out of Triton's response cache")
    parser.add_argument("--cascade-depth", type=cascade_depth, default="auto",
                        metavar="N|off|auto",
                        help="rank in a cascade: the feedback head scores each query's top N "
                             "candidates by the hybrid score, with the weights `fusionrank "
                             "tune-cascade` fitted for N; off: every candidate (200, as before);"
                             " auto (default): the depth the run's tuning chose, else off")
    parser.add_argument("--reranker", default="auto", metavar="PATH|auto|off",
                        help="a `fusionrank train-reranker` cross-encoder (e.g. "
                             "runs/relevance/reranker) reranks the fused top N as the last "
                             "stage, with the weight `fusionrank evaluate --reranker` fitted; "
                             "auto (default): the run's chosen configuration for the device "
                             "(RUN/reranker/choice.json, benchmarks/reranker.py), else off")
    parser.add_argument("--reranker-depth", type=int, metavar="N",
                        help="with --reranker PATH: the N it reranks (required)")
    parser.add_argument("--reranker-precision", choices=["fp32", "int8"],
                        help="with --reranker: its graph's precision (default: --precision; "
                             "FP32 on the GPU)")
    parser.add_argument("--live-catalogue", action="store_true",
                        help="serve a catalogue that `fusionrank catalogue apply` changes while "
                             "it serves (layouts one and two; the search answers then stay out "
                             "of the response cache)")
    parser.add_argument("--max-queue-size", type=int, default=ServingOptions.max_queue_size,
                        help="requests each search model lets wait; more are refused at once "
                             "(UNAVAILABLE, the SDK's ServerOverloadedError); 0 = no bound")
    parser.add_argument("--device", choices=["cpu", "gpu"], default=ServingOptions.device,
                        help="gpu: a repository for Triton's GPU container (docker/compose.yaml):"
                             " the encoder and retrieval on the onnxruntime backend with TensorRT"
                             " FP16, only text work in Python models")
    parser.add_argument("--tensorrt-engine", metavar="PATH",
                        help="with --device gpu: serve the encoder as this TensorRT engine "
                             "(export-tensorrt); an absolute path not built yet is built at the "
                             "container's first start")
    parser.add_argument("--engine-cache", default=ServingOptions.engine_cache,
                        help="with --device gpu: the container's TensorRT engine cache folder")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="embed the catalogue on Ray (pip install '.[ray]'): a Ray started "
                             "here, or the cluster whose head is at ADDRESS (HOST:PORT, as "
                             "`ray start --head` prints it)")
    parser.add_argument("--ray-actors", type=int, metavar="N",
                        help="with --ray: encoder actors (default: one per CPU of the cluster)")
    parser.set_defaults(run=run_build)


def cascade_depth(text: str) -> int | str:
    if text in ("off", "auto"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a depth (an integer), off or auto, not {text!r}"
                                         ) from None


def reranker_choice(args: argparse.Namespace):
    """build's --reranker, --reranker-depth and --reranker-precision: None (off), "auto" (the
    run's choice, resolved once the run is known) or a RerankerChoice."""
    from fusionrank.app.build import RerankerChoice

    if args.reranker in ("off", "auto"):
        if args.reranker_depth is not None:
            raise CommandError("--reranker-depth needs --reranker PATH")
        return None if args.reranker == "off" or args.pretrained else "auto"
    if args.pretrained:
        raise CommandError("--reranker reranks a trained run's fused ranking, which "
                           "--pretrained does not serve")
    if args.reranker_depth is None:
        raise CommandError("--reranker needs --reranker-depth N (the fused top N it reranks)")
    return RerankerChoice(Path(args.reranker), args.reranker_depth, args.reranker_precision)


def ray_options(args: argparse.Namespace):
    """build's --ray and --ray-actors as RayOptions (None: no Ray), checked before the build
    starts: Ray installed, the cluster's head answering."""
    if args.ray is None:
        if args.ray_actors is not None:
            raise CommandError("--ray-actors needs --ray")
        return None
    from fusionrank.export.ray_embedding import RayOptions, RayUnavailable, preflight

    try:
        options = RayOptions(address=args.ray or None, actors=args.ray_actors)
        preflight(options)
    except (ValueError, RayUnavailable) as error:
        raise CommandError(str(error)) from None
    return options


def load_named_catalogue(name: str, datasets: str | None, lenient: bool):
    from fusionrank.core import datasets as shared
    from fusionrank.core.catalogue import load_catalogue

    adapters = {"online_retail": shared.online_retail_catalogue,
                "homedepot": shared.homedepot_catalogue}
    if name in adapters:
        if datasets:
            shared.datasets_dir(datasets)  # fails early with a clear message
            relative = {"online_retail": shared.ONLINE_RETAIL_FILE,
                        "homedepot": shared.HOMEDEPOT_FILE}[name]
            return adapters[name](Path(datasets) / relative)
        return adapters[name]()
    return load_catalogue(name, lenient=lenient)


def run_build(args: argparse.Namespace) -> int:
    from fusionrank.app import build, staging
    from fusionrank.core.model_folders import bundled_model_path

    if args.student not in ("auto", "off") and args.pretrained:
        raise CommandError("--student needs the trained run it was distilled from, not "
                           "--pretrained")
    if isinstance(args.cascade_depth, int) and args.pretrained:
        raise CommandError("--cascade-depth ranks with a trained run's feedback head, which "
                           "--pretrained does not serve")
    reranker = reranker_choice(args)
    ray = ray_options(args)
    catalogue, report = load_named_catalogue(args.catalogue, args.datasets, args.lenient)
    print(report.summary(), file=sys.stderr)
    build.check_capacity(len(catalogue), args.out)
    try:
        options = ServingOptions(encoder_instances=args.encoder_instances,
                                 ranker_instances=args.ranker_instances,
                                 layout=args.layout,
                                 onnx_threads=args.threads, ranker_threads=args.ranker_threads,
                                 precision=args.precision,
                                 max_queue_delay_us=args.max_queue_delay_us,
                                 response_cache=not (args.no_response_cache or args.live_catalogue),
                                 live_catalogue=args.live_catalogue,
                                 max_queue_size=args.max_queue_size, device=args.device,
                                 tensorrt_engine=args.tensorrt_engine,
                                 engine_cache=args.engine_cache, retrieval=args.retrieval)
    except ValueError as error:
        raise CommandError(str(error)) from error
    model = Path(args.model) if args.model else bundled_model_path()
    # Built beside --out and switched in whole once complete: a server deployed from the old
    # --out keeps its files as they were (app/staging.py).
    with staging.staged_output(args.out) as out:
        if args.reviews:
            catalogue = build.with_review_sentiment(catalogue, args.sentiment, args.reviews,
                                                    out / "artefacts" / "reviews")
        run = None if args.pretrained else (args.run_dir or build.newest_run()
                                            or build.train_default_run())
        if run is not None:
            print(f"serving the trained run {run}", file=sys.stderr)
        if reranker == "auto":
            reranker = build.chosen_reranker(run, options.device, args.reranker_precision) \
                if run is not None else None
        if args.student == "auto":
            student = build.chosen_student(run) if run is not None else None
        else:
            student = None if args.student == "off" else Path(args.student)
        repository = build.build_search_repository(catalogue, model, out, options, run_dir=run,
                                                   student_dir=student, final_out=args.out,
                                                   embedding_cache=args.embedding_cache,
                                                   cascade_depth=args.cascade_depth, ray=ray,
                                                   reranker=reranker)
        if not args.no_recommend:
            build.add_recommender(repository, args.recommender)
        build.add_sentiment_model(repository, args.sentiment)
    print(f"model repository written to {args.out / repository.name}", file=sys.stderr)
    return 0


def add_serve(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("serve", help="run Triton Inference Server on a model repository")
    parser.add_argument("--repository", type=Path, default=DEFAULT_BUILD / "model_repository")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--cache-mib", type=int, default=DEFAULT_CACHE_MIB,
                        help="Triton's response cache for the search ensemble, in MiB "
                             f"(default {DEFAULT_CACHE_MIB}; 0 turns it off)")
    parser.add_argument("--verbose", action="store_true", help="Triton's verbose log")
    parser.add_argument("--web-port", type=int, default=web.cli.DEFAULT_WEB_PORT,
                        help="port of the shop's web page, served beside Triton on --host "
                             f"(default {web.cli.DEFAULT_WEB_PORT})")
    parser.add_argument("--no-web", action="store_true", help="serve Triton alone, no web page")
    parser.add_argument("--max-restarts", type=int, default=MAX_RESTARTS,
                        help="restart a tritonserver that exits by itself (a crash) up to this "
                             f"many times in a row, then exit with an error (default "
                             f"{MAX_RESTARTS}; a run of {STEADY_S // 60} minutes resets the count)")
    parser.add_argument("--compact-dead-share", type=float, default=0.2,
                        help="with a live catalogue: compact it in the background once this "
                             "share of its rows is dead (replaced or deleted products'; "
                             "default 0.2)")
    parser.add_argument("--compact-segments", type=int, default=10_000,
                        help="... or once it serves this many segments (default 10000)")
    parser.add_argument("--compact-check-s", type=float, default=30.0,
                        help="how often to look (seconds, default 30)")
    parser.add_argument("--no-compact", action="store_true",
                        help="never compact in the background (`fusionrank catalogue compact` "
                             "still does)")
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="run N Triton servers, replica i on each port + 10·i, each on its "
                             "own copy of --repository (app/replicas.py); the page balances "
                             "across them, `deploy --rolling` switches them one at a time")
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from fusionrank.app.compaction_watch import CompactionPolicy, CompactionWatch
    from fusionrank.app.control import control_folder
    from fusionrank.app.model_watch import ModelWatch
    from fusionrank.app.processes import clean_after_dead_servers
    from fusionrank.app.serve import Ports, TritonServer
    from fusionrank.app.stub_watch import StubWatch

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    try:  # checked before anything starts
        policy = CompactionPolicy(args.compact_dead_share, args.compact_segments)
    except ValueError as error:
        raise CommandError(f"--compact-dead-share / --compact-segments: {error}") from None
    signal.signal(signal.SIGTERM, interrupt)  # SIGTERM stops as cleanly as Ctrl-C does
    for leftovers in clean_after_dead_servers():  # of a `serve` before this one, killed -9
        print(f"fusionrank serve: {leftovers}", file=sys.stderr, flush=True)
    if args.replicas != 1:
        return serve_replicas(args)
    server = TritonServer(args.repository, Ports(args.grpc_port, args.http_port, args.metrics_port),
                          host=args.host, verbose=args.verbose, cache_mib=args.cache_mib)
    server.check_ports()  # a port in use: refused now (exit 2), before the page or any model
    page = start_page(server.grpc_url, args)
    try:
        server.start()
        cache = f"response cache {args.cache_mib} MiB" if args.cache_mib else "no response cache"
        shop = f"; the shop {page.url}" if page else ""
        print(f"serving {args.repository} — gRPC {server.grpc_url}, HTTP {args.host}:"
              f"{args.http_port}, metrics {args.host}:{args.metrics_port}, {cache}{shop}; "
              f"model control needs the key in {control_folder(args.repository)} (owner "
              "only); Ctrl-C stops", file=sys.stderr, flush=True)
        # StubWatch reloads a model whose process died; ModelWatch one that was unloaded;
        # CompactionWatch compacts a live catalogue when it is due.
        compaction = contextlib.nullcontext() if args.no_compact else CompactionWatch(
            server, policy, interval_s=args.compact_check_s)
        with StubWatch(server), ModelWatch(server), compaction:
            return keep_serving(server, args.max_restarts)
    except KeyboardInterrupt:
        return 0
    finally:
        if page:
            page.stop()
        server.stop()


def start_page(triton_url: str | tuple[str, ...], args: argparse.Namespace):
    """The shop's page beside Triton (it waits for Triton by itself), unless --no-web; None
    where its port is taken (Triton still serves)."""
    if args.no_web:
        return None
    from fusionrank.app.web.app import WebSettings
    from fusionrank.app.web.server import WebServer

    try:
        return WebServer(WebSettings(triton_url), args.host, args.web_port).start()
    except RuntimeError as error:
        print(f"fusionrank serve: {error}; serving Triton alone (--web-port chooses another "
              "port)", file=sys.stderr, flush=True)
        return None


def serve_replicas(args: argparse.Namespace) -> int:
    """`serve --replicas N`: every replica started (or none), the page over all of them."""
    from fusionrank.app.replicas import ReplicaSet, plan_replicas
    from fusionrank.app.serve import Ports

    try:
        replicas = plan_replicas(args.repository, args.replicas, args.host,
                                 Ports(args.grpc_port, args.http_port, args.metrics_port))
    except ValueError as error:
        raise CommandError(str(error)) from None
    replica_set = ReplicaSet(replicas, cache_mib=args.cache_mib, verbose=args.verbose)
    page = None
    try:
        replica_set.start()
        page = start_page(tuple(replica_set.urls), args)
        shop = f"; the shop {page.url}" if page else ""
        print(f"serving {args.repository} on {len(replicas)} replicas — gRPC "
              f"{', '.join(replica_set.urls)}{shop}; Ctrl-C stops", file=sys.stderr, flush=True)
        return replica_set.serve(args.max_restarts)
    except KeyboardInterrupt:
        return 0
    finally:
        if page:
            page.stop()
        replica_set.stop()


def refuse_taken_ports(argv: list[str]) -> None:
    """`serve`'s ports, checked before the full parser is built (some commands' parsers import
    torch: seconds): a PortInUse naming each taken port. Leaves anything it cannot parse to the
    full parser, which says what is wrong."""
    from fusionrank.app.control import check_ports_free

    if {"-h", "--help"} & set(argv):
        return
    top = argparse.ArgumentParser(prog="fusionrank", add_help=False, exit_on_error=False)
    add_serve(top.add_subparsers(dest="command"))
    try:
        args, _ = top.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return
    if args.replicas != 1:  # each replica's ports: checked where the replicas are planned
        return
    check_ports_free(args.host, {"gRPC": args.grpc_port, "HTTP": args.http_port,
                                 "metrics": args.metrics_port})


def add_export_tensorrt(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export-tensorrt", help="build a TensorRT FP16/INT8 engine of the query encoder "
                                "(on the GPU machine that will serve it)")
    parser.add_argument("--onnx", type=Path,
                        default=DEFAULT_BUILD / "artefacts" / "encoder" / "encoder.onnx")
    parser.add_argument("--precision", choices=["fp16", "int8"], default="fp16")
    parser.add_argument("--calibration-queries", type=int, default=2048,
                        help="real Home Depot search terms used to calibrate INT8")
    parser.add_argument("--out", type=Path, help="engine file (default: beside the ONNX file)")
    parser.set_defaults(run=run_export_tensorrt)


def run_export_tensorrt(args: argparse.Namespace) -> int:
    from fusionrank.core import artefacts
    from fusionrank.core.encoding import MAX_QUERY_TOKENS, TextTokenizer
    from fusionrank.export.tensorrt import ShapeProfile, build_engine, calibration_batches

    profile = ShapeProfile()
    batches = []
    if args.precision == "int8":
        from fusionrank.core.datasets import read_homedepot

        queries = read_homedepot().search_term.drop_duplicates().head(args.calibration_queries)
        tokenizer = TextTokenizer(args.onnx.parent / artefacts.TOKENIZER, MAX_QUERY_TOKENS)
        batches = calibration_batches(queries.tolist(), tokenizer, profile)
    out = args.out or args.onnx.with_suffix(f".{args.precision}.plan")
    engine = build_engine(args.onnx, out, args.precision, profile, batches)
    print(f"TensorRT engine written to {engine}", file=sys.stderr)
    return 0


COMMANDS = [add_build, add_serve, *deploy.COMMANDS, *catalogue.COMMANDS, *search.COMMANDS,
            *recommend.COMMANDS, *sentiment.COMMANDS, *web.COMMANDS, add_export_tensorrt]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fusionrank", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        from fusionrank.app.control import PortInUse

        try:
            refuse_taken_ports(argv)
        except PortInUse as error:
            print(f"fusionrank serve: {error}", file=sys.stderr)
            return 2
    args = parser().parse_args(argv)
    args.command_line = shlex.join(["fusionrank", *argv])  # as typed, for the reports
    from fusionrank.app.build import BuildError
    from fusionrank.client import FusionRankError
    from fusionrank.core.catalogue import CatalogueError

    try:
        return args.run(args)
    except (CommandError, BuildError, CatalogueError, FusionRankError, FileNotFoundError,
            ValueError, RuntimeError) as error:
        print(f"fusionrank {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
