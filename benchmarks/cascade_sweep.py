"""The cascade's depth sweep as a report: what `fusionrank tune-cascade` fitted, scored and timed
on a run's dev queries (RUN/cascade.json), as a table and a plot of dev NDCG@10 against the
time the cascade changes.

    fusionrank tune-cascade --run runs/relevance
    .venv/bin/python -m benchmarks.cascade_sweep --run runs/relevance

Writes benchmarks/reports/cascade_sweep.md, .json and .png.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.harness import REPORTS, heading, machine, save_report, table
from fusionrank.training.search.cascade import CASCADE_FILE

NAME = "cascade_sweep"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/relevance"))
    parser.add_argument("--out", type=Path, default=REPORTS)
    args = parser.parse_args(argv)
    path = args.run / CASCADE_FILE
    if not path.is_file():
        parser.error(f"{path} not found: run `fusionrank tune-cascade --run {args.run}` first")
    sweep = json.loads(path.read_text())
    tuned = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    # The figures are tune-cascade's: its command, and when it wrote them, on this machine.
    report = {"date": tuned, "command": sweep["command"] or f"fusionrank tune-cascade --run "
              f"{args.run}", "machine": machine(), **{k: v for k, v in sweep.items()
                                                      if k != "command"}}
    save_report(NAME, report, render(report), args.out)
    plot(report, args.out / f"{NAME}.png")
    return 0


def render(r: dict) -> str:
    rows = [[f"{row['depth']}{' (chosen)' if row['depth'] == r['chosen'] else ''}",
             f"{row['ndcg@10']:.4f}", f"{row['ndcg@10'] - r['one_stage']['ndcg@10']:+.4f}",
             f"{row['recall@100']:.4f}", f"{row['core_ms_per_query']:.2f}",
             ", ".join(f"{s} {w:g}" for s, w in row["weights"]["weights"].items())]
            for row in r["depths"]]
    timing = r["timing"]
    return heading(
        "The ranking cascade's depth, chosen on dev", r,
        f"Run `{r['run']}`, {r['dev_queries']} dev queries, pools of {r['pool']} "
        f"candidates; first stage (the hybrid, fitted on dev): "
        f"{r['first_stage']['weights']}",
        f"Timed: {timing['what']}, {timing['queries']} dev queries, {timing['batch']} a call; "
        "the depths take turns batch by batch") + "\n" + "\n".join([
            table(["depth", "dev NDCG@10", "vs one stage", "dev Recall@100",
                   "ScoreCandidates + Rank, ms a query", "S's weights, refitted"], rows), "",
            f"Rule: {r['rule']} ({r['one_stage']['ndcg@10']:.4f}). A depth of the pool's size "
            "is the one-stage ranking itself. Recall@100 below the head follows the first "
            "stage, so every depth under 100 has the hybrid's.", "",
            f"![dev NDCG@10 against time]({NAME}.png)", ""])


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    times = [row["core_ms_per_query"] for row in r["depths"]]
    ndcg = [row["ndcg@10"] for row in r["depths"]]
    ax.plot(times, ndcg, marker="o")
    for row, x, y in zip(r["depths"], times, ndcg, strict=True):
        ax.annotate(f"N={row['depth']}", (x, y), textcoords="offset points", xytext=(4, -12))
    ax.axhline(r["one_stage"]["ndcg@10"] - r["tolerance"], color="grey", linestyle="--",
               label="one stage − tolerance")
    ax.set_xlabel("ScoreCandidates + Rank, ms a query (batch 8)")
    ax.set_ylabel("dev NDCG@10")
    ax.set_title("Cascade depth: quality against time")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
