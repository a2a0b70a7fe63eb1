"""The ANN sweep's rule for where ANN starts to pay (benchmarks/ann_sweep.py), on crossover
points written out by hand."""

from benchmarks.ann_sweep import PAYS_MARGIN, TARGET_RECALL, ann_pays_from


def point(products: int, exact: tuple[float, float], ann: tuple[float, float],
          recall: float = TARGET_RECALL) -> dict:
    return {"products": products, "exact": {"ms_1": exact[0], "ms_8": exact[1]},
            "ann": {"ms_1": ann[0], "ms_8": ann[1], "recall": recall}}


def test_ann_pays_from_the_first_size_clearly_faster_both_ways_and_beyond():
    points = [point(125_000, (2.3, 0.75), (0.44, 0.45)),  # 5.3× and 1.67×
              point(31_250, (0.39, 0.32), (0.35, 0.33)),  # faster alone, not in batches
              point(62_500, (0.92, 0.50), (0.40, 0.41))]  # 2.3× and 1.22×: under the margin
    assert PAYS_MARGIN == 1.25 and ann_pays_from(points) == 125_000
    points[2] = point(62_500, (0.92, 0.50), (0.40, 0.39))  # 1.28× in batches: pays
    assert ann_pays_from(points) == 62_500


def test_ann_does_not_pay_below_the_recall_or_where_a_larger_size_does_not():
    assert ann_pays_from([point(125_000, (2.3, 0.75), (0.44, 0.45), recall=0.9)]) is None
    # Faster at the small cut only: not "from" it on.
    assert ann_pays_from([point(31_250, (1.0, 1.0), (0.5, 0.5)),
                          point(62_500, (1.0, 1.0), (0.9, 0.9))]) is None
    assert ann_pays_from([]) is None
