"""benchmarks/reports/scale.md/.json and scale.png from the phases of benchmarks/scale.py and
one `fusionrank evaluate --scale` run: a row per catalogue size, the issue's targets checked,
and an estimate for 10M and 100M products from the measured per-product figures."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from benchmarks.harness import REPORTS, heading, portable, save_report, stamp, table
from fusionrank.core.search.ann import keeps_vectors

GIB = 2**30
MACHINE_MEMORY_GIB = 24  # this machine; the estimate says where one such machine stops
TARGETS = {"rss_gib": 4.0, "throughput_ratio": 0.8, "p50_ratio": 1.25, "recall": 0.95,
           "ndcg_gap": 0.01, "build_minutes": 60, "rebuild_minutes": 5}


# Artefacts whose size does not grow with the catalogue: the encoders, the run's judgement
# memory and head, the small records. The rest is what a product costs.
FIXED = ("encoder/", "query_encoder/", "ranking/memory.npz", "ranking/feedback_head.onnx")


def per_product_files(sizes: dict[str, int]) -> dict[str, int]:
    return {name: size for name, size in sizes.items()
            if not name.startswith(FIXED) and not name.endswith(".json")}


def load_phase(work: Path, phase: str, products: int) -> dict | None:
    path = work / f"{phase}-{products}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def build_phases(work: Path, products: int) -> dict | None:
    """The build phase's figures with the change phase's rebuild (an older build phase file
    holds its own)."""
    build, change = load_phase(work, "build", products), load_phase(work, "change", products)
    if build and change:
        build = build | {"rebuild_after_change": change["rebuild_after_change"]}
    return build


def rebuild_figures(change: dict | None) -> dict:
    """The 1 % change's minutes, titles embedded and what became of the ANN index."""
    if not change:
        return {}
    ann = (change.get("retrieval") or {}).get("ann") or {}
    index = "-" if not ann else (
        f"built whole, {ann['build_seconds']:.0f} s" if ann.get("carried") is None else
        f"updated, {ann['build_seconds']:.0f} s ({ann['added']:,} added, "
        f"{ann['stale']:,} stale)")
    return {"rebuild_minutes": round(change["seconds"] / 60, 1),
            "rebuild_titles_embedded": change["titles_embedded"], "rebuild_index": index}


def load(rows: list[dict], mode: str) -> dict:
    return next((r for r in rows if r["mode"] == mode), {})


def size_row(products: int, build: dict | None, serve: dict | None, quality: dict | None
             ) -> dict:
    row: dict = {"products": products}
    if build:
        first = build["build"]
        row |= {"build_minutes": round(first["seconds"] / 60, 1),
                "build_cold": build["cold"],
                "embedding_minutes": round((first["embedding_seconds"] or 0) / 60, 1),
                "titles_embedded": first["titles_embedded"],
                "build_peak_gib": round(first["peak_rss_mib"] / 1024, 2),
                **rebuild_figures(build.get("rebuild_after_change")),
                "bytes_per_product": round(sum(per_product_files(build["artefact_bytes"]).values())
                                           / products),
                "fixed_bytes": sum(build["artefact_bytes"].values())
                - sum(per_product_files(build["artefact_bytes"]).values()),
                "artefacts": build["bytes_per_product"],
                "retrieval": (first.get("retrieval") or {}).get("kind"),
                "index": (build.get("ann_index") or {}).get("factory")}
    if serve:
        one, eight = load(serve["load"], "distinct c=1"), load(serve["load"], "distinct c=8")
        row |= {"rss_ready_gib": round(serve["memory_ready_mib"]["rss"] / 1024, 2),
                "rss_peak_gib": round(serve["memory_peak_mib"]["rss"] / 1024, 2),
                "pss_peak_gib": round(serve["memory_peak_mib"]["pss"] / 1024, 2),
                "qps_c1": one.get("throughput_qps"), "p50_c1_ms": one.get("p50_ms"),
                "p99_c1_ms": one.get("p99_ms"), "qps_c8": eight.get("throughput_qps"),
                "p50_c8_ms": eight.get("p50_ms"), "p99_c8_ms": eight.get("p99_ms")}
    if quality:
        test = quality["splits"]["test"]
        row |= {"recall_vs_exact": round(test["recall@100 of served retrieval against exact"], 4),
                "ndcg_served": round(test["fused, served"]["ndcg@10"], 4),
                "ndcg_exact": round(test["fused, exact retrieval"]["ndcg@10"], 4),
                "ndcg_bm25": round(test["bm25"]["ndcg@10"], 4),
                "ndcg_dense": round(test["dense, exact"]["ndcg@10"], 4)}
    return row


def compared_rounds(compare: dict | None) -> dict:
    """The compare phase (benchmarks/scale.py): each round's c=8 q/s and c=1 p50 of both
    sizes and their ratios (the larger over the smaller), their medians, and the larger
    server's memory peak over all rounds; {} where the phase did not run."""
    if not compare:
        return {}
    small, large = str(compare["against"]), str(compare["products"])
    rounds = []
    for number, measured in enumerate(compare["rounds"], 1):
        figures = {size: (load(measured["load"][size], "distinct c=8")["throughput_qps"],
                          load(measured["load"][size], "distinct c=1")["p50_ms"])
                   for size in (small, large)}
        rounds.append({"round": number, "first": int(measured["order"][0]),
                       "qps_c8": [figures[small][0], figures[large][0]],
                       "p50_c1_ms": [figures[small][1], figures[large][1]],
                       "qps_ratio": figures[large][0] / figures[small][0],
                       "p50_ratio": figures[large][1] / figures[small][1]})
    return {"against": int(small), "products": int(large), "seconds": compare["seconds"],
            "rounds": rounds,
            "qps_ratio": statistics.median(r["qps_ratio"] for r in rounds),
            "p50_ratio": statistics.median(r["p50_ratio"] for r in rounds),
            "rss_peak_gib": round(compare["memory_peak_mib"][large]["rss"] / 1024, 2),
            "pss_peak_gib": round(compare["memory_peak_mib"][large]["pss"] / 1024, 2)}


def targets(rows: list[dict], rounds: dict | None = None) -> list[tuple[str, str, bool]]:
    """The issue's targets against the rows; the speed ratios from the alternating rounds
    (their median) where they ran, and the memory peak the higher of both phases'."""
    small, large = rows[0], rows[-1]
    out = []

    def check(name: str, value: str, ok: bool) -> None:
        out.append((name, value, ok))

    peaks = [(phase["rss_peak_gib"], phase["pss_peak_gib"]) for phase in (large, rounds or {})
             if "rss_peak_gib" in phase]
    if peaks:
        rss, pss = max(peaks)
        check(f"server RSS at peak under load ≤ {TARGETS['rss_gib']} GiB at {large['products']:,}",
              f"{rss} GiB (PSS {pss})", rss <= TARGETS["rss_gib"])
    if rounds:
        for key, name, meets in (
                ("qps_ratio", f"q/s at c=8 ≥ {TARGETS['throughput_ratio']}×",
                 lambda r: r >= TARGETS["throughput_ratio"]),
                ("p50_ratio", f"p50 at c=1 ≤ {TARGETS['p50_ratio']}×",
                 lambda r: r <= TARGETS["p50_ratio"])):
            each = [r[key] for r in rounds["rounds"]]
            check(f"{name} the {rounds['against']:,} figure (median of the alternating rounds)",
                  f"{rounds[key]:.2f}× (rounds {min(each):.2f}-{max(each):.2f}, met in "
                  f"{sum(meets(r) for r in each)} of {len(each)})", meets(rounds[key]))
    elif "qps_c8" in large and "qps_c8" in small:
        ratio = large["qps_c8"] / small["qps_c8"]
        check(f"q/s at c=8 ≥ {TARGETS['throughput_ratio']}× the {small['products']:,} figure",
              f"{ratio:.2f}× ({large['qps_c8']:.0f} / {small['qps_c8']:.0f})",
              ratio >= TARGETS["throughput_ratio"])
        ratio = large["p50_c1_ms"] / small["p50_c1_ms"]
        check(f"p50 at c=1 ≤ {TARGETS['p50_ratio']}× the {small['products']:,} figure",
              f"{ratio:.2f}× ({large['p50_c1_ms']:.1f} / {small['p50_c1_ms']:.1f} ms)",
              ratio <= TARGETS["p50_ratio"])
    if "recall_vs_exact" in large:
        check(f"ANN recall@100 against exact ≥ {TARGETS['recall']}",
              f"{large['recall_vs_exact']:.4f}", large["recall_vs_exact"] >= TARGETS["recall"])
        gap = large["ndcg_served"] - large["ndcg_exact"]  # signed: ANN's loss is negative
        check(f"test NDCG@10, ANN within {TARGETS['ndcg_gap']} of exact",
              f"{large['ndcg_served']:.4f} against {large['ndcg_exact']:.4f} ({gap:+.4f})",
              abs(gap) <= TARGETS["ndcg_gap"])
    if "build_minutes" in large:
        check(f"the {large['products']:,} build ≤ {TARGETS['build_minutes']} min"
              + ("" if large["build_cold"] else " (embedding cache warm: see below)"),
              f"{large['build_minutes']} min", large["build_minutes"] <= TARGETS["build_minutes"])
    if "rebuild_minutes" in large:
        check(f"a rebuild after a 1 % change ≤ {TARGETS['rebuild_minutes']} min",
              f"{large['rebuild_minutes']} min ({large['rebuild_titles_embedded']:,} titles "
              f"embedded; index {large['rebuild_index']})",
              large["rebuild_minutes"] <= TARGETS["rebuild_minutes"])
    return out


def estimate(rows: list[dict], embed_titles_per_second: float | None) -> list[list[str]]:
    """10M and 100M products from the per-product slopes between the two largest sizes."""
    a, b = rows[-2], rows[-1]
    extra = b["products"] - a["products"]
    rss_slope = (b["rss_peak_gib"] - a["rss_peak_gib"]) * GIB / extra if "rss_peak_gib" in b \
        else None
    pss_slope = (b["pss_peak_gib"] - a["pss_peak_gib"]) * GIB / extra if "pss_peak_gib" in b \
        else None
    build_slope = (b["build_peak_gib"] - a["build_peak_gib"]) * GIB / extra
    out = []
    for products in (10_000_000, 100_000_000):
        more = products - b["products"]
        disk = (b["bytes_per_product"] * products + b["fixed_bytes"]) / GIB
        memory = (b["rss_peak_gib"] + rss_slope * more / GIB) if rss_slope is not None else None
        pss = (b["pss_peak_gib"] + pss_slope * more / GIB) if pss_slope is not None else None
        build = b["build_peak_gib"] + build_slope * more / GIB
        embed = products / embed_titles_per_second / 3600 if embed_titles_per_second else None
        fits = pss is not None and pss < 0.8 * MACHINE_MEMORY_GIB \
            and build < 0.8 * MACHINE_MEMORY_GIB
        out.append([f"{products:,}", f"{disk:,.0f} GiB",
                    "-" if memory is None else f"{memory:,.1f} GiB (PSS {pss:,.1f})",
                    f"{build:,.1f} GiB",
                    "-" if embed is None else f"{embed:,.1f} h on 2 cores",
                    f"one {MACHINE_MEMORY_GIB} GiB machine" if fits else "shard"])
    return out


def estimate_text(report: dict) -> str:
    """The worked estimate, in words, from the largest row's per-product figures."""
    row = report["rows"][-1]
    files = row.get("artefacts", {})
    index = files.get("index/ann.faiss", 0)
    vectors = files.get("index/embeddings.npy", 0)
    factory = row.get("index") or "HNSW32,SQ8"  # (a build phase from before it was recorded)
    # An index that keeps its vectors whole is the served product vectors as well
    # (core/search/ann.py IndexVectors); an 8-bit one is rescored from the float32 rows.
    whole = keeps_vectors(factory)
    rate = report.get("embedding_titles_per_second")
    lines = [f"From the {row['products']:,}-product row: {row['bytes_per_product']:,} artefact "
             f"bytes a product ({vectors:,.0f} of them the float32 embeddings, {index:,.0f} the "
             f"{factory} index), a build peak of {row['build_peak_gib']} GiB and, embedding from "
             f"a cold cache, {rate:,.0f} titles a second on these 2 cores." if rate else
             f"From the {row['products']:,}-product row: {row['bytes_per_product']:,} artefact "
             "bytes a product."]
    for products in (10_000_000, 100_000_000):
        hnsw_gib = index * products / GIB
        vectors_gib = vectors * products / GIB
        hours = products / rate / 3600 if rate else float("nan")
        vectors_text = (
            f"its float16 vectors answer the cosines and feed the features, so the float32 "
            f"embeddings ({vectors_gib:,.0f} GiB on disk) are read by the build only"
            if whole else
            f"the float32 embeddings take {vectors_gib:,.0f} GiB on disk; only the shortlist's "
            "rows of them are read a query, so they can stay on an SSD behind the page cache")
        lines.append(
            f"- **{products:,} products.** The {factory} index takes {hnsw_gib:,.0f} GiB; "
            f"{vectors_text}. The index is walked at random and must stay in memory. "
            f"Embedding the catalogue takes {hours:,.1f} hours on 2 cores: Ray Data across "
            "machines (issue 26) is what makes the build practical. "
            + ("One 24 GiB machine can still hold the index; the build, whose peak grows "
               "with the catalogue (the title features are computed in one process), cannot, "
               "so it must be split by product ranges." if hnsw_gib < 0.5 * MACHINE_MEMORY_GIB
               else "The index alone outgrows a 24 GiB machine: shard the catalogue by product "
               f"(about {hnsw_gib / (0.4 * MACHINE_MEMORY_GIB):,.0f} shards of 24 GiB, each "
               "an index of its own, searched in parallel and their top 100 merged), or move "
               "to IVF-PQ codes (tens of bytes a product) rescored from the embeddings on "
               "SSD, at the recall the sweep measures for PQ."))
    return "\n".join(lines)


def write_scale_report(work: Path, quality_file: Path, sizes: tuple[int, ...],
                       notes: list[str] | None = None) -> dict:
    quality = json.loads(quality_file.read_text())
    # A size's row takes its build's repository (WORK/build-N); the rebuilt one after the 1 %
    # change (WORK/rebuild-N, its index updated) is reported apart.
    by_size: dict[int, dict] = {}
    updated = []
    for catalogue in quality["catalogues"]:
        if Path(catalogue["repository"]).parent.name.startswith("rebuild-"):
            updated.append(catalogue)
        else:
            by_size.setdefault(catalogue["products"], catalogue)
    builds = [build_phases(work, n) for n in sizes]
    serves = [load_phase(work, "serve", n) for n in sizes]
    rows = [size_row(n, build, served, by_size.get(n))
            for n, build, served in zip(sizes, builds, serves, strict=True)]
    rounds = compared_rounds(load_phase(work, "compare", sizes[-1]))
    cold = [b["build"] for b in builds if b and b["cold"] and b["build"]["embedding_seconds"]]
    rate = (sum(b["titles_embedded"] for b in cold) / sum(b["embedding_seconds"] for b in cold)
            if cold else None)
    report = stamp() | {"rows": rows, "rounds": rounds, "targets": targets(rows, rounds),
                        "quality_command":
                        quality.get("command"), "embedding_titles_per_second": rate,
                        "estimate": estimate(rows, rate), "notes": notes or [],
                        "after_change": [size_row(c["products"], None, None, c) | {
                            "repository": portable(c["repository"])} for c in updated],
                        "one_ranker": [size_row(n, None, served, None) for n in sizes
                                       if (served := load_phase(work, "serve-one-ranker", n))]}
    report["resident"] = resident_of(serves[-1], sizes[-1])
    plot(rows, REPORTS / "scale.png")
    save_report("scale", report, markdown(report))
    return report


def rounds_section(report: dict) -> list[str]:
    """compared_rounds as a table: the speed targets' evidence."""
    rounds = report.get("rounds") or {}
    if not rounds:
        return []
    small, large = f"{rounds['against']:,}", f"{rounds['products']:,}"
    return [f"\n## Speed against {small} products, in alternating rounds\n",
            f"Both servers up at once, each measured in turn ({rounds['seconds']:.0f} s "
            "perf_analyzer windows, distinct queries, cache off), the order alternating "
            "round by round (`python -m benchmarks.scale compare`). The speed targets take "
            "the median of the rounds' ratios.\n",
            table(["round", "first", f"q/s c=8, {small}", f"q/s c=8, {large}", "ratio",
                   f"p50 c=1 (ms), {small}", f"p50 c=1 (ms), {large}", "ratio"],
                  [[str(r["round"]), f"{r['first']:,}", f"{r['qps_c8'][0]:.0f}",
                    f"{r['qps_c8'][1]:.0f}", f"{r['qps_ratio']:.3f}×",
                    f"{r['p50_c1_ms'][0]:.1f}", f"{r['p50_c1_ms'][1]:.1f}",
                    f"{r['p50_ratio']:.3f}×"] for r in rounds["rounds"]]
                  + [["median", "", "", "", f"**{rounds['qps_ratio']:.3f}×**", "", "",
                      f"**{rounds['p50_ratio']:.3f}×**"]]),
            f"\nThe {large}-product server's memory at peak over all rounds: RSS "
            f"{rounds['rss_peak_gib']} GiB, PSS {rounds['pss_peak_gib']} GiB."]


def one_ranker_section(report: dict) -> list[str]:
    """The same builds served with one ranker copy (`--layout two`), against the rows above."""
    rows = report.get("one_ranker") or []
    if not rows:
        return []
    small = report["rows"][0]
    return ["\n## One ranker copy: `--layout two --encoder-instances 2 --ranker-instances 1 "
            "--ranker-threads 2`\n", table(
                ["products", "RSS ready (GiB)", "RSS peak (GiB)", "PSS peak (GiB)",
                 "q/s c=1 (p50 ms)", "q/s c=8 (p99 ms)", f"c=8 against {small['products']:,}"],
                [[f"{r['products']:,}", f"{r['rss_ready_gib']}", f"{r['rss_peak_gib']}",
                  f"{r['pss_peak_gib']}", f"{r['qps_c1']:.0f} ({r['p50_c1_ms']:.1f})",
                  f"{r['qps_c8']:.0f} ({r['p99_c8_ms']:.0f})",
                  f"{r['qps_c8'] / small['qps_c8']:.2f}×" if "qps_c8" in small else "-"]
                 for r in rows])]


def resident_of(served: dict | None, products: int) -> dict:
    """What each process of the server held resident, file by file, as the load left it (the
    serve phase's resident_by_file at `products`); {} where the phase did not record it."""
    processes = [p for p in (served or {}).get("resident_by_file_after_load", []) if p["mib"]]
    return {"products": products, "processes": processes} if processes else {}


def resident_section(report: dict) -> list[str]:
    """resident_of as a table, a column a process: why RSS and PSS part."""
    resident = report.get("resident") or {}
    if not resident:
        return []
    processes = resident["processes"]
    keys = list(dict.fromkeys(key for p in processes for key in p["mib"]))
    return [f"\n## Resident memory by file at {resident['products']:,} products, after the "
            "load\n",
            table(["mapping", *(f"{p['name']} {p['pid']}: RSS / PSS (MiB)" for p in processes)],
                  [[key, *(f"{p['mib'][key]['rss']:,} / {p['mib'][key]['pss']:,}"
                           if key in p["mib"] else "-" for p in processes)] for key in keys]),
            "\nA page of a mapped file counts in the RSS of every process that maps it; the PSS "
            "splits it between them."]


def after_change_section(report: dict) -> list[str]:
    """The index a 1 % change updated (stale entries skipped), against exact retrieval."""
    rows = report.get("after_change") or []
    if not rows:
        return []
    return ["\n## The index after a 1 % change (updated, not rebuilt)\n", table(
        ["products", "repository", "ANN recall@100", "test NDCG@10 served", "exact retrieval"],
        [[f"{r['products']:,}", f"`{r['repository']}`", f"{r['recall_vs_exact']:.4f}",
          f"{r['ndcg_served']:.4f}", f"{r['ndcg_exact']:.4f}"] for r in rows])]


def markdown(report: dict) -> str:
    rows = report["rows"]

    def cell(row: dict, key: str, fmt: str = "{}") -> str:
        return fmt.format(row[key]) if row.get(key) is not None else "-"

    main = table(
        ["products", "retrieval", "build (min)", "build peak (GiB)", "artefact bytes/product",
         "RSS ready (GiB)", "RSS peak (GiB)", "PSS peak (GiB)", "q/s c=1", "p50 / p99 c=1 (ms)",
         "q/s c=8", "p50 / p99 c=8 (ms)", "ANN recall@100", "test NDCG@10"],
        [[f"{r['products']:,}", f"ann, {r['index']}" if r.get("index") else cell(r, "retrieval"),
          cell(r, "build_minutes"),
          cell(r, "build_peak_gib"), cell(r, "bytes_per_product", "{:,}"),
          cell(r, "rss_ready_gib"), cell(r, "rss_peak_gib"), cell(r, "pss_peak_gib"),
          cell(r, "qps_c1", "{:.0f}"), f"{cell(r, 'p50_c1_ms', '{:.1f}')} / "
          f"{cell(r, 'p99_c1_ms', '{:.1f}')}", cell(r, "qps_c8", "{:.0f}"),
          f"{cell(r, 'p50_c8_ms', '{:.1f}')} / {cell(r, 'p99_c8_ms', '{:.1f}')}",
          cell(r, "recall_vs_exact", "{:.4f}"), cell(r, "ndcg_served", "{:.4f}")]
         for r in rows])
    quality = table(["products", "BM25", "dense (exact)", "fused, exact retrieval",
                     "fused, served"],
                    [[f"{r['products']:,}", cell(r, "ndcg_bm25", "{:.4f}"),
                      cell(r, "ndcg_dense", "{:.4f}"), cell(r, "ndcg_exact", "{:.4f}"),
                      cell(r, "ndcg_served", "{:.4f}")] for r in rows])
    names = sorted({name for r in rows for name in r.get("artefacts", {})})
    artefacts = table(["artefact", *(f"{r['products']:,}" for r in rows)],
                      [[name, *(cell(r.get("artefacts", {}), name, "{:,.0f}") for r in rows)]
                       for name in names])
    checks = table(["target", "measured", "met"],
                   [[n, v, "yes" if ok else "**no**"] for n, v, ok in report["targets"]])
    builds = table(["products", "cold cache", "titles embedded", "embedding (min)",
                    "whole build (min)", "1 % change: titles embedded", "1 % change: ANN index",
                    "1 % change (min)"],
                   [[f"{r['products']:,}", cell(r, "build_cold"), cell(r, "titles_embedded",
                                                                      "{:,}"),
                     cell(r, "embedding_minutes"), cell(r, "build_minutes"),
                     cell(r, "rebuild_titles_embedded", "{:,}"), cell(r, "rebuild_index"),
                     cell(r, "rebuild_minutes")]
                    for r in rows])
    estimate = table(["products", "artefacts on disk", "server memory at peak (the "
                      "250k→1M slope)", "build memory at peak (same)", "embedding the catalogue",
                      "where"], report["estimate"])
    return "\n".join([
        heading("Scale: 45,782 to 1,000,000 products on one machine", report,
                f"Quality: `{report['quality_command']}`"),
        "## Per catalogue size\n", main, "\n![scale](scale.png)\n", "## Targets\n", checks,
        *rounds_section(report), *resident_section(report), *one_ranker_section(report),
        "\n## Builds\n", builds,
        *after_change_section(report),
        "\n## Quality as distractors are added (test NDCG@10)\n",
        quality, "\n## Bytes per product of each served artefact\n", artefacts,
        "\n## 10M and 100M products\n", estimate, "", estimate_text(report),
        *(["\n## Notes\n", *(f"- {note}" for note in report["notes"])] if report["notes"]
          else [])])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["products"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for key, label in (("qps_c1", "c=1"), ("qps_c8", "c=8")):
        axes[0].plot(sizes, [r.get(key) for r in rows], marker="o", label=label)
    axes[0].set(title="fused search, q/s", xscale="log", ylim=(0, None))
    axes[0].legend()
    for key, label in (("rss_peak_gib", "RSS peak"), ("pss_peak_gib", "PSS peak"),
                       ("rss_ready_gib", "RSS ready")):
        axes[1].plot(sizes, [r.get(key) for r in rows], marker="o", label=label)
    axes[1].axhline(TARGETS["rss_gib"], color="grey", linestyle=":", label="target")
    axes[1].set(title="server memory (GiB)", xscale="log", ylim=(0, None))
    axes[1].legend()
    for key, label in (("ndcg_served", "fused, served"), ("ndcg_exact", "fused, exact"),
                       ("ndcg_bm25", "BM25"), ("ndcg_dense", "dense")):
        axes[2].plot(sizes, [r.get(key) for r in rows], marker="o", label=label)
    axes[2].set(title="test NDCG@10", xscale="log")
    axes[2].legend(fontsize=8)
    for axis in axes:
        axis.set_xlabel("products")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
