"""Search commands: `fusionrank train`, `distil`, `train-reranker`, `evaluate`, `search`.

    fusionrank train --out runs/relevance            # fine-tune + feedback head + fusion fit
    fusionrank distil --run runs/relevance            # a 3-layer student query encoder
    fusionrank train-reranker --run runs/relevance    # a cross-encoder for the fused top N
    fusionrank evaluate --run runs/relevance --out benchmarks/reports
    fusionrank search "cordless drill" -k 10         # the server (or --repository: in process)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fusionrank.app.clients import add_client_arguments, client_for
from fusionrank.core.contract import DEFAULT_K, MAX_K

DEFAULT_RUN = Path("runs/relevance")


def add_train(commands: argparse._SubParsersAction) -> None:
    from fusionrank.training.search.finetune import FinetuneConfig

    defaults = FinetuneConfig()
    parser = commands.add_parser(
        "train", help="fine-tune the encoder, train the feedback head and fit the fusion weights "
                      "on relevance judgements")
    parser.add_argument("--data", type=Path,
                        help="relevance CSV (product_uid, product_title, search_term, relevance); "
                             "default: ../shared/datasets/homedepot/relevance.csv.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_RUN,
                        help=f"run folder (default {DEFAULT_RUN}); an unfinished run there resumes")
    parser.add_argument("--init-model", type=Path,
                        help="local Hugging Face encoder folder "
                             "(default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"),
                        help="where catalogue embeddings are cached (default runs/cache)")
    parser.add_argument("--split-seed", type=int, default=13)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--pairs-per-epoch", type=int, default=defaults.pairs_per_epoch,
                        help="cap on training pairs per epoch (default, or 0: one per "
                             "training query)")
    parser.add_argument("--max-steps", type=int, help="stop fine-tuning after this many steps")
    parser.add_argument("--positive-threshold", type=float, default=defaults.positive_threshold,
                        help="lowest grade used as a positive pair (default "
                             f"{defaults.positive_threshold}; each pair is weighted by its grade)")
    parser.add_argument("--max-query-tokens", type=int, default=defaults.max_query_tokens)
    parser.add_argument("--max-title-tokens", type=int, default=defaults.max_title_tokens)
    parser.add_argument("--dev-queries", type=int, default=150,
                        help="dev queries of the per-epoch evaluation (default 150)")
    parser.add_argument("--frozen-layers", type=int, default=defaults.frozen_layers,
                        help="lowest transformer layers kept frozen, with the embeddings "
                             f"(default {defaults.frozen_layers}; 0 trains everything)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all)")
    parser.add_argument("--no-resume", action="store_true",
                        help="start over even if the run folder holds a resumable state")
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from fusionrank.training.search.data import SplitConfig
    from fusionrank.training.search.finetune import FinetuneConfig
    from fusionrank.training.search.pipeline import TrainConfig, run_training

    for name in ("epochs", "batch_size", "dev_queries", "max_query_tokens", "max_title_tokens"):
        if getattr(args, name) < 1 or (name == "batch_size" and args.batch_size < 2):
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number"
                             + (" of at least 2" if name == "batch_size" else ""))
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError("--max-steps must be at least 1")
    if not 1.0 < args.positive_threshold <= 3.0:
        raise ValueError("--positive-threshold must be above 1 (irrelevant) and at most 3")
    finetune = FinetuneConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        pairs_per_epoch=args.pairs_per_epoch, max_query_tokens=args.max_query_tokens,
        max_title_tokens=args.max_title_tokens, frozen_layers=args.frozen_layers,
        positive_threshold=args.positive_threshold, seed=args.seed, max_steps=args.max_steps,
        threads=args.threads)
    config = TrainConfig(out=args.out, data=args.data, init_model=args.init_model,
                         cache=args.cache, split=SplitConfig(seed=args.split_seed),
                         finetune=finetune, dev_queries=args.dev_queries,
                         resume=not args.no_resume, threads=args.threads)
    manifest = run_training(config)
    print(json.dumps({"run": str(args.out), "checkpoint": manifest["checkpoint"],
                      "weights": manifest["stages"]["fusion"]["weights"],
                      "seconds": manifest["seconds"]}, indent=2))
    return 0


def add_run_arguments(parser: argparse.ArgumentParser, out_help: str) -> None:
    """--run, --out, --cache and --threads of the commands that read a finished run."""
    parser.add_argument("--run", dest="run_dir", type=Path, default=DEFAULT_RUN,
                        help=f"a `fusionrank train` run folder (default {DEFAULT_RUN})")
    parser.add_argument("--out", type=Path, help=out_help)
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"),
                        help="where catalogue embeddings are cached (default runs/cache)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all)")


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate", help="BM25, pretrained, fine-tuned, hybrid and fused ranking on the full "
                         "catalogue; writes JSON, a markdown table and a plot")
    add_run_arguments(parser, "report folder (default: RUN/evaluation)")
    parser.add_argument("--data", type=Path, help="relevance CSV (default: the run's own)")
    parser.add_argument("--student", type=Path,
                        help="a `fusionrank distil` checkpoint (e.g. RUN/student/best): adds "
                             "its fused ranking and the query-encoding latency of teacher and "
                             "student, FP32 and INT8")
    parser.add_argument("--scale", type=Path, nargs="+", metavar="REPOSITORY",
                        help="instead: rank the run's dev and test queries over each built "
                             "model repository's whole catalogue with its served files "
                             "(exact against served retrieval, BM25, dense, fused); writes "
                             "scale.json and scale.md")
    parser.add_argument("--reranker", type=Path, nargs="+", default=(),
                        help="`fusionrank train-reranker` checkpoints (e.g. RUN/reranker): adds "
                             "the table over depth × layers × precision")
    parser.add_argument("--reranker-depths", type=depth_list,
                        help="depths N of the served ranking reranked (default 5,10,20,30 "
                             "where the served cascade's head holds them, and the head)")
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from fusionrank.training.search.evaluate import EvaluateConfig, markdown_table, run_evaluation

    out = args.out or args.run_dir / "evaluation"
    if args.scale:
        from fusionrank.training.search.scale import run_scale_evaluation, scale_table

        report = run_scale_evaluation(args.run_dir, args.scale, out, args.threads,
                                      getattr(args, "command_line", None))
        print(scale_table(report), file=sys.stdout)
        return 0
    report = run_evaluation(EvaluateConfig(run=args.run_dir, out=out,
                                           data=args.data, cache=args.cache,
                                           threads=args.threads, student=args.student,
                                           rerankers=tuple(args.reranker),
                                           reranker_depths=args.reranker_depths,
                                           command=getattr(args, "command_line", None)))
    print(markdown_table(report), file=sys.stdout)
    return 0


def depth_list(text: str) -> tuple[int, ...]:
    try:
        depths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"depths must be integers separated by commas, not "
                                         f"{text!r}") from None
    if not depths or min(depths) < 1:
        raise argparse.ArgumentTypeError(f"depths must be positive, not {text!r}")
    return depths


def add_tune_cascade(commands: argparse._SubParsersAction) -> None:
    from fusionrank.training.search.cascade import DEPTHS, TOLERANCE

    parser = commands.add_parser(
        "tune-cascade", help="refit the fused ranking for a cascade of each depth on dev, time "
                             "it, and choose the depth `fusionrank build` serves by default "
                             "(writes RUN/cascade.json)")
    parser.add_argument("--run", dest="run_dir", type=Path, default=DEFAULT_RUN,
                        help=f"a `fusionrank train` run folder (default {DEFAULT_RUN})")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"),
                        help="where catalogue embeddings are cached (default runs/cache)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: all)")
    parser.add_argument("--data", type=Path, help="relevance CSV (default: the run's own)")
    parser.add_argument("--depths", type=depth_list, default=DEPTHS,
                        help="cascade depths to fit, comma-separated (default "
                             f"{','.join(map(str, DEPTHS))})")
    parser.add_argument("--timing-queries", type=int, default=400,
                        help="dev queries timed per depth (default 400)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="dev NDCG@10 the chosen depth may lose against the one-stage "
                             f"ranking (default {TOLERANCE})")
    parser.set_defaults(run=run_tune_cascade)


def run_tune_cascade(args: argparse.Namespace) -> int:
    from fusionrank.training.search.cascade import CascadeConfig, markdown_table, tune_cascade

    report = tune_cascade(CascadeConfig(
        run=args.run_dir, depths=args.depths, data=args.data, cache=args.cache,
        threads=args.threads, timing_queries=args.timing_queries, tolerance=args.tolerance,
        command=getattr(args, "command_line", None)))
    print(markdown_table(report), file=sys.stdout)
    return 0


def add_distil(commands: argparse._SubParsersAction) -> None:
    from fusionrank.training.search.distil import DistilConfig

    defaults = DistilConfig()
    parser = commands.add_parser(
        "distil", help="distil a run's fine-tuned encoder into a smaller student query encoder "
                       "(the catalogue stays embedded by the teacher)")
    add_run_arguments(parser, "student folder (default: RUN/student)")
    parser.add_argument("--layers", type=int, default=defaults.layers,
                        help=f"transformer layers of the student (default {defaults.layers}), "
                             "initialised from the teacher's evenly spaced layers")
    parser.add_argument("--keep", help="the teacher layers to start from, e.g. 0,2,4 "
                                       "(overrides --layers)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--max-steps", type=int, help="stop after this many steps")
    parser.set_defaults(run=run_distil)


def run_distil(args: argparse.Namespace) -> int:
    from fusionrank.training.search.distil import DistilConfig, run_distillation

    for name in ("layers", "epochs", "batch_size"):
        if getattr(args, name) < (2 if name == "batch_size" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be at least "
                             f"{2 if name == 'batch_size' else 1}")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError("--max-steps must be at least 1")
    try:
        keep = tuple(int(x) for x in args.keep.split(",")) if args.keep else None
    except ValueError:
        raise ValueError(f"--keep must be layer numbers separated by commas, not {args.keep!r}"
                         ) from None
    config = DistilConfig(layers=len(keep) if keep else args.layers, keep=keep,
                          epochs=args.epochs, batch_size=args.batch_size,
                          learning_rate=args.learning_rate, max_steps=args.max_steps,
                          threads=args.threads)
    record = run_distillation(args.run_dir, args.out, config, args.cache,
                              command=getattr(args, "command_line", None))
    print(json.dumps({k: record[k] for k in ("checkpoint", "kept_layers", "steps", "best_dev",
                                             "teacher_dev", "seconds")}, indent=2))
    return 0


def distil_main(argv: list[str]) -> int:
    """`fusionrank distil ARGV...` from code (the tests' tiny student)."""
    top = argparse.ArgumentParser(prog="fusionrank")
    add_distil(top.add_subparsers(dest="command", required=True))
    return run_distil(top.parse_args(["distil", *argv]))


def add_train_reranker(commands: argparse._SubParsersAction) -> None:
    from fusionrank.training.search.reranker import RerankerConfig

    defaults = RerankerConfig(run=DEFAULT_RUN)
    parser = commands.add_parser(
        "train-reranker", help="train a cross-encoder reranker of a run's fused top N "
                               "(from the bundled all-MiniLM-L6-v2; resumable)")
    add_run_arguments(parser, "output folder (default RUN/reranker); an unfinished one resumes")
    for name in ("layers", "max_query_tokens", "max_tokens", "list_size", "queries_per_step",
                 "epochs", "eval_every", "dev_queries", "dev_depth", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            default=getattr(defaults, name),
                            help=f"default {getattr(defaults, name)}")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--max-steps", type=int, help="stop after this many steps")
    parser.add_argument("--init-model", type=Path,
                        help="local Hugging Face encoder folder to start from "
                             "(default: the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--no-resume", action="store_true",
                        help="start over even if the output folder holds a resumable state")
    parser.set_defaults(run=run_train_reranker)


def run_train_reranker(args: argparse.Namespace) -> int:
    from fusionrank.training.search.reranker import RerankerConfig, train_reranker

    numbers = ("layers", "max_query_tokens", "max_tokens", "list_size", "queries_per_step",
               "epochs", "eval_every", "dev_queries", "dev_depth")
    for name in numbers:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError("--max-steps must be at least 1")
    config = RerankerConfig(run=args.run_dir, out=args.out, init_model=args.init_model,
                            learning_rate=args.learning_rate, max_steps=args.max_steps,
                            threads=args.threads, cache=args.cache, resume=not args.no_resume,
                            seed=args.seed, **{n: getattr(args, n) for n in numbers})
    print(json.dumps(train_reranker(config), indent=2))
    return 0


def train_reranker_main(argv: list[str]) -> int:
    """`fusionrank train-reranker ARGV...` from code (the tests' tiny reranker)."""
    top = argparse.ArgumentParser(prog="fusionrank")
    add_train_reranker(top.add_subparsers(dest="command", required=True))
    return run_train_reranker(top.parse_args(["train-reranker", *argv]))


def train_main(argv: list[str]) -> int:
    """`fusionrank train ARGV...` from code (the build's short default run)."""
    top = argparse.ArgumentParser(prog="fusionrank")
    add_train(top.add_subparsers(dest="command", required=True))
    return run_train(top.parse_args(["train", *argv]))


def add_search(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("search", help="search the served catalogue")
    parser.add_argument("query", nargs="+", help="one or more queries")
    parser.add_argument("-k", type=int, default=DEFAULT_K, help=f"results per query (1..{MAX_K})")
    add_client_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--explain", action="store_true",
                        help="break each score into its signals (value × fitted weight) and "
                             "show the query's spelling correction")
    parser.set_defaults(run=run_search)


def run_search(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        if args.explain:
            answers = client.explain_batch(args.query, k=args.k)
            results = [answer.hits for answer in answers]
        else:
            answers = None  # the table shows titles and prices: ask for the products
            results = client.search_batch(args.query, k=args.k, products=True)
    for row, (query, hits) in enumerate(zip(args.query, results, strict=True)):
        if args.json:
            line = answers[row].to_dict() if answers else {
                "query": query, "results": [h.to_dict() for h in hits]}
            print(json.dumps(line, ensure_ascii=False))
            continue
        print(f"\n{query}")
        if answers and answers[row].corrected:
            print(f"     (showing results for: {answers[row].corrected})")
        for rank, hit in enumerate(hits, start=1):
            price = f"  £{hit.product.price:.2f}" if hit.product.price is not None else ""
            print(f"{rank:>3}. {hit.score:6.3f}  {hit.product_id:<12} {hit.product.title}{price}")
            if answers:
                print("       = " + " + ".join(f"{p.weight:.3f} × {p.signal} {p.value:.3f}"
                                               for p in hit.parts))
    return 0


COMMANDS = [add_search, add_train, add_distil, add_train_reranker, add_evaluate,
            add_tune_cascade]
