"""Whether an outsider who reaches a `fusionrank serve` server's ports can change what it serves,
and whether a second `serve` on a port in use is refused at once.

Starts a real tritonserver (fusionrank.app.serve.TritonServer, as `serve` does) on a
hard-linked copy of a built repository (so nothing is written beside the operator's one), then:

1. an outsider's unload (HTTP POST /v2/repository/models/search/unload, and gRPC, no key):
   refused? with which status; is the search model still ready?
2. an outsider's load uploading model code (`file:1/model.py` that would write a marker file):
   refused? marker absent? (and, as a control, the same request with the key runs it);
3. `fusionrank serve` on each of the server's ports in turn (gRPC, HTTP, metrics): exit status,
   seconds from the command's start to its exit, and whether its output shows any model loading.

    .venv/bin/python -m benchmarks.operator_safety [build/model_repository]

Writes benchmarks/reports/operator_safety.md and .json.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks.harness import heading, load_average, save_report, stamp, table
from fusionrank.app.serve import TritonServer
from fusionrank.core import artefacts

ROOT = Path(__file__).resolve().parents[1]
FUSIONRANK = ROOT / ".venv" / "bin" / "fusionrank"


def http(server: TritonServer, path: str, body: dict, headers: dict | None = None) -> int:
    request = urllib.request.Request(f"http://{server.host}:{server.ports.http}{path}",
                                     data=json.dumps(body).encode(), headers=headers or {},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def hard_linked_copy(repository: Path, folder: Path) -> Path:
    copy = folder / "model_repository"
    shutil.copytree(repository, copy, copy_function=artefacts.link_or_copy, symlinks=True)
    return copy


def search_ready(server: TritonServer) -> bool:
    """The search model's own readiness (Triton's, so that the figure does not depend on the
    SDK and the built repository sharing a contract version)."""
    url = f"http://{server.host}:{server.ports.http}/v2/models/search/ready"
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status == 200
    except urllib.error.URLError:
        return False


def outsider_unload(server: TritonServer) -> dict:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    status = http(server, "/v2/repository/models/search/unload", {})
    triton = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        triton.unload_model("search")
        grpc_refused, grpc_answer = False, "accepted"
    except InferenceServerException as error:
        grpc_refused, grpc_answer = True, error.message()
    finally:
        triton.close()
    return {"http_status": status, "http_refused": status == 403, "grpc_refused": grpc_refused,
            "grpc_answer": grpc_answer, "search_ready_after": search_ready(server)}


def upload_body(marker: Path) -> dict:
    code = (f"open({str(marker)!r}, 'w').write('ran')\n"
            "class TritonPythonModel:\n    def execute(self, requests):\n        return []\n")
    config = {"name": "intruder", "backend": "python", "max_batch_size": 0,
              "input": [{"name": "X", "data_type": "TYPE_FP32", "dims": [1]}],
              "output": [{"name": "Y", "data_type": "TYPE_FP32", "dims": [1]}]}
    return {"parameters": {"config": json.dumps(config),
                           "file:1/model.py": base64.b64encode(code.encode()).decode()}}


def outsider_upload(server: TritonServer, folder: Path) -> dict:
    marker = folder / "uploaded_code_ran"
    status = http(server, "/v2/repository/models/intruder/load", upload_body(marker))
    time.sleep(2.0)  # a load would have started the model's process by now
    refused = {"http_status": status, "refused": status == 403, "marker_absent":
               not marker.exists()}
    # The control: with the key, the same upload loads and runs (so the refusal is the key's).
    key = server.control_headers("http")
    with_key = http(server, "/v2/repository/models/intruder/load", upload_body(marker), key)
    refused["with_key_http_status"] = with_key
    refused["with_key_code_ran"] = marker.exists()
    http(server, "/v2/repository/models/intruder/unload", {}, key)
    return refused


def second_serve(server: TritonServer, repository: Path, which: str) -> dict:
    ports = {"gRPC": "0", "HTTP": "0", "metrics": "0"}
    ports[which] = str({"gRPC": server.ports.grpc, "HTTP": server.ports.http,
                        "metrics": server.ports.metrics}[which])
    command = [str(FUSIONRANK), "serve", "--repository", str(repository), "--no-web",
               "--grpc-port", ports["gRPC"], "--http-port", ports["HTTP"],
               "--metrics-port", ports["metrics"]]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    return {"port": which, "rc": done.returncode, "seconds": round(seconds, 2),
            "model_loaded": "loading:" in output or "successfully loaded" in output,
            "message": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "",
            "load_average_1m": round(load_average(), 2)}


def report_text(report: dict) -> str:
    unload, upload = report["outsider_unload"], report["outsider_upload"]
    refused = sum([unload["http_refused"] and unload["grpc_refused"],
                   upload["refused"] and upload["marker_absent"]])
    rows = table(["port taken", "rc", "seconds to refusal", "a model loaded",
                  "load average (1 min)"],
                 [[c["port"], c["rc"], f"{c['seconds']:.2f}", "yes" if c["model_loaded"] else "no",
                   c["load_average_1m"]] for c in report["second_serve"]])
    no_key = "yes" if unload["http_refused"] else "NO"
    ready = "200" if unload["search_ready_after"] else "NOT READY"
    probes = table(["probe", "answer", "refused", "effect"], [
        ["HTTP `POST /v2/repository/models/search/unload`, no key", unload["http_status"],
         no_key, f"`/v2/models/search/ready` after: {ready}"],
        ['gRPC `unload_model("search")`, no key', f"`{unload['grpc_answer']}`",
         "yes" if unload["grpc_refused"] else "NO", ""],
        ["HTTP `POST /v2/repository/models/intruder/load` with `file:1/model.py`, no key",
         upload["http_status"], "yes" if upload["refused"] else "NO",
         f"uploaded code ran: {'no' if upload['marker_absent'] else 'YES'}"],
        ["the same upload with the key (control)", upload["with_key_http_status"], "—",
         f"uploaded code ran: {'yes' if upload['with_key_code_ran'] else 'no'}"]])
    worst = max(c["seconds"] for c in report["second_serve"])
    clash_ok = all(c["rc"] == 2 and not c["model_loaded"] for c in report["second_serve"])
    return heading("Operator safety: model control and port ownership", report,
                   f"Repository: `{report['repository']}` (served from a hard-linked copy)") + f"""
## Outsiders: {refused} of 2 refused (target 2 of 2)

{probes}

## A second `fusionrank serve` on a port in use (target: rc 2 in ≤ 2 s, nothing loaded)

{rows}

Worst: {worst:.2f} s, {'target met' if clash_ok and worst <= 2 else 'target missed'}. The
seconds run from the command's start, so they include the CLI's own imports (about 1 s of CPU)
and grow with the machine's load (shared here: its load average is in the table).
Message: `{report['second_serve'][0]['message']}`
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository", type=Path, nargs="?",
                        default=ROOT / "build" / "model_repository")
    args = parser.parse_args()
    repository = args.repository.resolve()
    if not (repository / "fusionrank.json").is_file():
        raise SystemExit(f"{repository} is not a built model repository (no fusionrank.json)")
    with tempfile.TemporaryDirectory(prefix="operator_safety_") as scratch:
        folder = Path(scratch)
        copy = hard_linked_copy(repository, folder)
        with (folder / "tritonserver.log").open("w") as log, \
                TritonServer(copy, log=log) as server:
            report = {
                **stamp(), "repository": str(repository),
                "outsider_unload": outsider_unload(server),
                "outsider_upload": outsider_upload(server, folder),
                "second_serve": [second_serve(server, copy, which)
                                 for which in ("gRPC", "HTTP", "metrics")],
            }
    save_report("operator_safety", report, report_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
