"""`fusionrank status`'s answer: each model version the server knows, its state, and since when
it serves (the rollout that switched it, else the build the repository was first served from);
a version the repository holds and the server does not serve is a MISSING row."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import tritonclient.grpc as grpcclient

from fusionrank.app.control import control_headers, key_for
from fusionrank.app.deploy.errors import first_line
from fusionrank.app.deploy.plan import FIRST_BUILT, is_probe, model_configs, read_manifest
from fusionrank.app.deploy.rollout import read_log
from fusionrank.client import CatalogueStatus
from fusionrank.model_repository.config import versions

MISSING = "MISSING"  # status's state for a model the repository holds and the server does not serve


def server_status(url: str, repository: str | Path | None = None,
                  control_key: str | None = None) -> list[dict]:
    """Each model version the server knows that serves, loads or failed: its state and since
    when it serves (its rollout, else the build). With `repository`, each version it holds that
    the server does not serve is a MISSING row: never dropped in silence."""
    client = grpcclient.InferenceServerClient(url)
    try:
        headers = control_headers(control_key or key_for(url, repository))
        index = client.get_model_repository_index(headers=headers).models
    finally:
        client.close()
    since, built = since_when(Path(repository)) if repository is not None else ({}, "")
    rows = []
    for model in index:
        if model.state == "UNAVAILABLE" and model.reason in ("unloaded", ""):
            continue  # a version unloaded by a rollout
        if is_probe(model.name):
            continue
        version = int(model.version) if model.version else 0
        rows.append({"model": model.name, "version": version, "state": model.state,
                     "since": since.get((model.name, version), built and f"build {built}"),
                     "reason": first_line(Exception(model.reason)) if model.reason else ""})
    if repository is not None:
        rows += missing_rows(Path(repository), rows)
    return sorted(rows, key=lambda r: (r["model"], r["version"]))


def since_when(repository: Path) -> tuple[dict[tuple[str, int], str], str]:
    """(model, version) → when a rollout switched it in, and the time of the build the
    repository was first served from (for every version no rollout switched in)."""
    manifest = read_manifest(repository)
    built = manifest.get(FIRST_BUILT) or manifest.get("built_at", "")
    since = {(model, to): entry["switched_at"]
             for entry in read_log(repository) if entry["outcome"] == "switched"
             for model, (_, to) in entry["models"].items()}
    return since, built


def missing_rows(repository: Path, rows: list[dict]) -> list[dict]:
    """A MISSING row for each version folder of `repository` that no row shows (unloaded,
    say, by a caller with the key): `serve` reloads such a model and says so."""
    shown = {(r["model"], r["version"]) for r in rows}
    return [{"model": name, "version": version, "state": MISSING, "since": "",
             "reason": "the repository holds it, the server does not serve it"}
            for name in model_configs(repository)
            for version in versions(repository / name) if (name, version) not in shown]


def status_table(rows: list[dict], last: dict | None) -> str:
    """The rows as a table, and the last rollout's outcome under it."""
    header = ("MODEL", "VERSION", "STATE", "SINCE", "")
    cells = [header, *[(r["model"], str(r["version"]), r["state"], r["since"] or "—",
                        r["reason"]) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() + (
        f"  {row[4]}" if row[4] else "") for row in cells]
    if last:
        lines.append(f"\nlast rollout {last['started_at']}: {last['outcome']} (version "
                     f"{last['version']}){': ' + last['reason'] if last['reason'] else ''}")
    return "\n".join(lines)


def status_text(status: CatalogueStatus) -> str:
    """A live catalogue's state in one line (`fusionrank status`, `catalogue status`)."""
    last = "never" if status.last_change_at is None else datetime.fromtimestamp(
        status.last_change_at, UTC).isoformat(timespec="seconds")
    return (f"live catalogue on base version {status.base}: {status.products} products, "
            f"{status.segments} segments ({status.rows} rows, "
            f"{status.rows - status.products} replaced or deleted), applied through change "
            f"set {status.applied_through}, {status.pending} pending; last change {last}")
