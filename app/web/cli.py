"""`fusionrank web`: the shop's page over a running Triton server (`fusionrank serve` starts it
itself, beside Triton).

    fusionrank web --url 127.0.0.1:8001 --port 8080      # then open http://127.0.0.1:8080

Imports nothing heavy until the command runs, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

DEFAULT_WEB_PORT = 8080
DEFAULT_TIMEOUT_S = 10.0


def add_web(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "web", help="the shop in a browser: search with each score explained, session "
                    "recommendations and review sentiment, over a running Triton server")
    parser.add_argument("--url", default="127.0.0.1:8001",
                        help="the Triton server's gRPC address (default 127.0.0.1:8001)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_WEB_PORT,
                        help=f"HTTP port of the page (default {DEFAULT_WEB_PORT})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds each call to the server may take")
    parser.set_defaults(run=run_web)


def run_web(args: argparse.Namespace) -> int:
    from fusionrank.app.web.app import WebSettings
    from fusionrank.app.web.server import WebServer

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # SIGTERM ends the command as Ctrl-C does (0)
    with contextlib.suppress(KeyboardInterrupt), \
            WebServer(WebSettings(args.url, args.timeout), args.host, args.port) as web:
        # Said once the page answers (WebServer.start waits for uvicorn to listen).
        print(f"the shop: {web.url} (API docs /docs) over Triton at {args.url}; Ctrl-C stops",
              file=sys.stderr, flush=True)
        while True:
            signal.pause()
    return 0


COMMANDS = [add_web]
