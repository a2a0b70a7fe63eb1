"""`fusionrank build` at scale: which retrieval a catalogue's size gets, and the refusal of a
catalogue too large for the machine, made before any work."""

from __future__ import annotations

import pytest

from fusionrank.app.build import Capacity, retrieval_kind
from fusionrank.core.search.ann import EXACT_BELOW
from fusionrank.model_repository.search.ensemble import ServingOptions

GIB = 2**30


@pytest.mark.parametrize(("products", "asked", "device", "kind"), [
    (EXACT_BELOW - 1, "auto", "cpu", "exact"),
    (EXACT_BELOW, "auto", "cpu", "ann"),
    (1_000, "ann", "cpu", "ann"),
    (5_000_000, "exact", "cpu", "exact"),
    (5_000_000, "auto", "gpu", "exact"),  # the GPU repository retrieves on the GPU
])
def test_the_catalogue_size_picks_the_retrieval(products, asked, device, kind):
    options = ServingOptions(retrieval=asked, device=device)
    assert retrieval_kind(products, options) == kind


def test_unknown_retrieval_is_refused():
    with pytest.raises(ValueError, match="retrieval must be auto, exact or ann"):
        ServingOptions(retrieval="hnsw")
    with pytest.raises(ValueError, match="CPU repository only"):
        ServingOptions(retrieval="ann", device="gpu")


def test_a_catalogue_too_large_for_the_disk_is_refused_with_the_estimate(tmp_path):
    fits = Capacity.of(1_000, tmp_path)
    assert fits.problem() is None
    huge = Capacity(100_000_000, disk_needed=550 * GIB, disk_free=40 * GIB,
                    memory_needed=3 * GIB, memory_available=20 * GIB)
    assert huge.problem() == (
        "a catalogue of 100,000,000 products needs about 550.0 GiB of disk to build "
        "(measured per product: benchmarks/reports/scale.md), and 40.0 GiB is free")
    starved = Capacity(2_000_000, disk_needed=GIB, disk_free=40 * GIB,
                       memory_needed=14 * GIB, memory_available=6 * GIB)
    assert "14.0 GiB of memory" in starved.problem()


def test_the_estimate_grows_with_the_catalogue(tmp_path):
    small, large = Capacity.of(10_000, tmp_path), Capacity.of(1_000_000, tmp_path)
    assert large.disk_needed == 100 * small.disk_needed
    assert large.memory_needed > small.memory_needed
