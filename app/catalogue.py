"""`fusionrank catalogue apply|status`: change the served catalogue while it serves (a build
with `--live-catalogue`; docs/live_catalogue.md).

    fusionrank catalogue apply changes.jsonl --url 127.0.0.1:8001
    fusionrank catalogue status --url 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from fusionrank.client import CatalogueStatus, FusionRankClient
from fusionrank.core.live.changes import ChangeReport


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


def status_text(status: CatalogueStatus) -> str:
    last = "never" if status.last_change_at is None else datetime.fromtimestamp(
        status.last_change_at, UTC).isoformat(timespec="seconds")
    return (f"live catalogue on base version {status.base}: {status.products} products, "
            f"{status.segments} segments ({status.rows} rows, "
            f"{status.rows - status.products} replaced or deleted), applied through change "
            f"set {status.applied_through}, {status.pending} pending; last change {last}")


COMMANDS = [add_catalogue]
