"""The scale report's speed targets from the alternating rounds of `benchmarks.scale compare`:
each round's ratios, their median, written out by hand."""

from benchmarks.scale_report import compared_rounds, targets


def measured(qps_c8: float, p50_c1: float) -> list[dict]:
    return [{"mode": "distinct c=1", "throughput_qps": 1000 / p50_c1, "p50_ms": p50_c1},
            {"mode": "distinct c=8", "throughput_qps": qps_c8, "p50_ms": 8000 / qps_c8}]


def phase(rounds: list[tuple[tuple[float, float], tuple[float, float]]]) -> dict:
    return {"products": 1_000_000, "against": 45_782, "seconds": 15,
            "rounds": [{"order": [45_782, 1_000_000][::1 if i % 2 == 0 else -1],
                        "load": {"45782": measured(*small), "1000000": measured(*large)}}
                       for i, (small, large) in enumerate(rounds)],
            "memory_peak_mib": {"45782": {"rss": 1300.0, "pss": 900.0},
                                "1000000": {"rss": 4200.0, "pss": 2300.0}}}


def test_the_targets_take_the_median_of_the_rounds_ratios():
    rounds = compared_rounds(phase([((400, 7.0), (300, 9.0)),     # 0.75×, 1.29×
                                    ((400, 7.0), (340, 8.0)),     # 0.85×, 1.14×
                                    ((380, 8.0), (342, 8.8))]))   # 0.90×, 1.10×
    assert [r["first"] for r in rounds["rounds"]] == [45_782, 1_000_000, 45_782]
    assert [round(r["qps_ratio"], 2) for r in rounds["rounds"]] == [0.75, 0.85, 0.9]
    assert round(rounds["qps_ratio"], 2) == 0.85 and round(rounds["p50_ratio"], 2) == 1.14
    # A single serve phase per size that misses both ratios: the rounds decide.
    rows = [{"products": 45_782, "qps_c8": 400, "p50_c1_ms": 6.0},
            {"products": 1_000_000, "qps_c8": 300, "p50_c1_ms": 9.0, "rss_peak_gib": 3.9,
             "pss_peak_gib": 2.2}]
    checks = {name.split(" the ")[0]: (value, ok) for name, value, ok in targets(rows, rounds)}
    assert checks["q/s at c=8 ≥ 0.8×"] == ("0.85× (rounds 0.75-0.90, met in 2 of 3)", True)
    assert checks["p50 at c=1 ≤ 1.25×"][1] is True
    # The higher memory peak of the two phases is the one checked (4,200 MiB > 4 GiB).
    rss = next(ok for name, _, ok in targets(rows, rounds) if name.startswith("server RSS"))
    assert rss is False
    without = {name.split(" the ")[0]: ok for name, _, ok in targets(rows)}
    assert without["q/s at c=8 ≥ 0.8×"] is False and without["p50 at c=1 ≤ 1.25×"] is False
