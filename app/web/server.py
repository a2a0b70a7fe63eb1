"""The web app on uvicorn in a background thread: beside Triton in `fusionrank serve`, and in the
tests and the benchmark.

    with WebServer(WebSettings(triton.grpc_url), port=0) as web:   # port 0: a free one
        print(web.url)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import uvicorn

from fusionrank.app.web.app import WebSettings, create_app

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


@dataclass
class WebServer:
    settings: WebSettings
    host: str = "127.0.0.1"
    port: int = 8080  # 0: any free port (`port` holds the bound one once started)
    _server: uvicorn.Server | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> WebServer:
        config = uvicorn.Config(create_app(self.settings), host=self.host, port=self.port,
                                log_config=None, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        # uvicorn installs no signal handlers off the main thread: the caller stops it.
        self._thread = threading.Thread(target=self._server.run, name="fusionrank-web",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the web app did not start on {self.host}:{self.port} "
                                   "(is the port in use?)")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # open connections past the timeout: close them
            self._server.force_exit = True
            self._thread.join(timeout_s)
        self._server = self._thread = None

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
