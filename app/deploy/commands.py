"""The `fusionrank deploy` and `fusionrank status` subcommands: arguments in, a rollout or a
status table out."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from tritonclient.utils import InferenceServerException

from fusionrank.app.control import CONTROL_KEY_ENV, ControlError, key_for, live_records
from fusionrank.app.deploy.errors import first_line
from fusionrank.app.deploy.rolling import rolling_deploy
from fusionrank.app.deploy.rollout import DRAIN_S, deploy, read_log
from fusionrank.app.deploy.status import server_status, status_table, status_text
from fusionrank.client import CatalogueStatus, FusionRankClient
from fusionrank.core import artefacts as names
from fusionrank.core.search.contract import CATALOGUE_MODEL

DEFAULT_REPOSITORY = Path("build/model_repository")  # what README command 1 builds and serves


def add_deploy(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "deploy", help="switch a running server to a new build's models (zero downtime; a "
                       "rollout that fails to load or to answer probes is refused)")
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address")
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                        help="the model repository the server serves (changed in place)")
    parser.add_argument("--source", type=Path, required=True,
                        help="a model repository built with `fusionrank build --out DIR` "
                             "(DIR/model_repository)")
    parser.add_argument("--drain-s", type=float, default=DRAIN_S,
                        help="seconds between the switch and dropping the old versions")
    parser.add_argument("--rolling", action="store_true",
                        help="switch every replica of `serve --replicas` serving --repository, "
                             "one at a time (--url is not used); a refused replica rolls back "
                             "those already switched")
    parser.add_argument("--skip-down", action="store_true",
                        help="with --rolling: roll the replicas that answer and report a down "
                             "one, rather than refuse")
    add_key_file(parser)
    parser.set_defaults(run=run_deploy)


def add_key_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control-key-file", type=Path, metavar="PATH",
                        help="the server's model-control key (a file holding it, or the server "
                             "file `serve` wrote): for a server elsewhere; default: the file "
                             "`serve` keeps beside --repository, or $" + CONTROL_KEY_ENV)


def run_deploy(args: argparse.Namespace) -> int:
    for path, what in ((args.repository, "--repository"), (args.source, "--source")):
        if not (path / names.REPOSITORY_MANIFEST).is_file():
            raise FileNotFoundError(f"{what} {path} is not a model repository built by "
                                    "`fusionrank build` (no fusionrank.json)")
    if args.skip_down and not args.rolling:
        raise ValueError("--skip-down goes with --rolling")
    if args.rolling:
        rolled = rolling_deploy(args.repository, args.source, args.drain_s, args.skip_down)
        print(rolled.summary(), file=sys.stderr)
        return 0 if rolled.outcome in ("switched", "unchanged") else 1
    key = key_for(args.url, args.repository, args.control_key_file)
    record = deploy(args.url, args.repository, args.source, args.drain_s, control_key=key)
    print(record.summary(), file=sys.stderr)
    return 0 if record.outcome != "refused" else 1


def add_status(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("status", help="what version of each model serves, since when")
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address")
    parser.add_argument("--repository", type=Path,
                        help="the served model repository: adds since when, from its rollouts "
                             f"(default: {DEFAULT_REPOSITORY} where a local `fusionrank serve` "
                             "serves it at --url)")
    parser.add_argument("--json", action="store_true", help="one JSON document")
    add_key_file(parser)
    parser.set_defaults(run=run_status)


def served_default(url: str) -> Path | None:
    """DEFAULT_REPOSITORY when a `fusionrank serve` on this machine serves it at `url`: so a
    plain `fusionrank status` beside README command 1 needs no option."""
    served = any(record.serves(url) for record in live_records(DEFAULT_REPOSITORY))
    return DEFAULT_REPOSITORY if served else None


def run_status(args: argparse.Namespace) -> int:
    if args.repository is None and args.control_key_file is None:
        args.repository = served_default(args.url)
    try:
        key = key_for(args.url, args.repository, args.control_key_file)
        rows = server_status(args.url, args.repository, control_key=key)
    except InferenceServerException as error:
        if "restricted" in first_line(error):
            raise ControlError(f"the server at {args.url} refused model control (a wrong key?): "
                               f"{first_line(error)}") from None
        raise RuntimeError(f"no server answers at {args.url}: {first_line(error)}") from None
    log = read_log(args.repository) if args.repository else []
    last = log[-1] if log else None
    live = live_status(args.url, rows)
    if args.json:
        print(json.dumps({"models": rows, "last_rollout": last,
                          "live_catalogue": live and asdict(live)}, indent=2))
    else:
        print(status_table(rows, last) + (f"\n{status_text(live)}" if live else ""))
    return 0


def live_status(url: str, rows: list[dict]) -> CatalogueStatus | None:
    """The live catalogue's state, where the server serves a `catalogue` model."""
    if not any(r["model"] == CATALOGUE_MODEL and r["state"] == "READY" for r in rows):
        return None
    with FusionRankClient(url) as client:
        return client.catalogue_status()


COMMANDS = [add_deploy, add_status]
