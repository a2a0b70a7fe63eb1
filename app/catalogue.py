"""`fusionrank catalogue apply|status`: change the served catalogue while it serves (a build
with `--live-catalogue`; docs/live_catalogue.md).

    fusionrank catalogue apply changes.jsonl --url 127.0.0.1:8001
    fusionrank catalogue status --url 127.0.0.1:8001
    fusionrank catalogue compact --url 127.0.0.1:8001 --repository build/model_repository
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from fusionrank.app.deploy.commands import DEFAULT_REPOSITORY, add_key_file
from fusionrank.app.deploy.rollout import DRAIN_S
from fusionrank.app.deploy.status import status_text
from fusionrank.client import FusionRankClient
from fusionrank.core.live.changes import ChangeReport

# A compaction is a build (minutes of CPU at 45,782 products) on the machine that serves: at
# niceness 10 it gets about a tenth of the CPU while searches want all of it, as a merge is
# throttled in a search engine (benchmarks/reports/live_catalogue.md has what each costs).
COMPACTION_NICENESS = 10


def add_catalogue(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "catalogue", help="change the served catalogue while it serves (upserts and deletes)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    apply = actions.add_parser(
        "apply", help="apply a change set (JSON Lines: {\"op\": \"upsert\", \"product\": {...}} "
                      "or {\"op\": \"delete\", \"product_id\": ...}); searchable on return")
    apply.add_argument("changes", help="the change set's file, or - for standard input")
    status = actions.add_parser("status", help="the base version, segments, pending log and "
                                               "last change")
    for action in (apply, status):
        action.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address")
        action.add_argument("--json", action="store_true", help="one JSON document")
    apply.add_argument("--timeout-s", type=float, default=600.0,
                       help="how long to wait for the server to apply the set")
    apply.set_defaults(run=run_apply)
    status.set_defaults(run=run_status)
    compact = actions.add_parser(
        "compact", help="fold the segments into a new base (a build over the live catalogue, "
                        "embedding nothing again) and roll it out; searches and change sets "
                        "go on meanwhile")
    compact.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address")
    compact.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY,
                         help="the model repository the server serves (changed in place)")
    compact.add_argument("--out", type=Path,
                         help="where the new base is built (default: beside the served build, "
                              "<build>-compacted)")
    compact.add_argument("--drain-s", type=float, default=DRAIN_S,
                         help="seconds between the switch and dropping the old base")
    compact.add_argument("--niceness", type=int, default=COMPACTION_NICENESS,
                         help="the CPU priority the compaction lowers itself by (os.nice): "
                              "searches on the same machine come first")
    compact.add_argument("--json", action="store_true", help="one JSON document")
    add_key_file(compact)
    compact.set_defaults(run=run_compact)


def run_apply(args: argparse.Namespace) -> int:
    changes = sys.stdin.buffer.read() if args.changes == "-" else Path(args.changes)
    with FusionRankClient(args.url) as client:
        answer = client.apply_changes(changes, timeout_s=args.timeout_s)
    applied = answer.applied
    if args.json:
        print(json.dumps({"applied": applied and asdict(applied),
                          "status": asdict(answer.status)}, indent=2))
    elif applied is None:
        print("an empty change set: nothing applied", file=sys.stderr)
        print(status_text(answer.status))
    else:
        done = ChangeReport(applied.added, applied.changed, applied.deleted,
                            applied.unknown_deletes)
        print(f"change set {applied.sequence} applied in {applied.seconds:.2f} s "
              f"(embedding {applied.embed_seconds:.2f} s): {done.summary()}; "
              f"{applied.products} products")
    return 0


def run_status(args: argparse.Namespace) -> int:
    with FusionRankClient(args.url) as client:
        status = client.catalogue_status()
    print(json.dumps(asdict(status), indent=2) if args.json else status_text(status))
    return 0


def run_compact(args: argparse.Namespace) -> int:
    from fusionrank.app.compact import compact, default_out
    from fusionrank.app.control import key_for

    key = key_for(args.url, args.repository, args.control_key_file)
    os.nice(args.niceness)  # a background job: the searches beside it come first
    report = compact(args.url, args.repository, args.out or default_out(args.repository),
                     args.drain_s, control_key=key)
    print(json.dumps(asdict(report), indent=2) if args.json else report.summary())
    return 0 if report.outcome == "switched" else 1


COMMANDS = [add_catalogue]
