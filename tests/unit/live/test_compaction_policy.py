"""When `fusionrank serve` compacts a live catalogue by itself (app/compaction_watch.py)."""

from __future__ import annotations

import pytest

from fusionrank.app.cli import main
from fusionrank.app.compaction_watch import CompactionPolicy
from fusionrank.app.serve import Ports


def test_a_compaction_is_due_at_the_dead_share_or_the_segment_count():
    policy = CompactionPolicy(dead_share=0.25, segments=100)
    assert policy.due(rows=1000, products=1000, segments=0) is None
    assert policy.due(rows=1000, products=751, segments=99) is None
    assert policy.due(rows=1000, products=750, segments=0) == (
        "25% of its 1,000 rows are dead (at 25% or more)")
    assert policy.due(rows=1000, products=1000, segments=100) == (
        "it serves 100 segments (at 100 or more)")
    assert policy.due(rows=0, products=0, segments=0) is None  # an empty catalogue


@pytest.mark.parametrize("dead_share, segments", [(0.0, 10), (1.5, 10), (0.2, 0)])
def test_a_policy_that_never_or_always_compacts_is_refused(dead_share, segments):
    with pytest.raises(ValueError):
        CompactionPolicy(dead_share, segments)


def test_serve_refuses_a_bad_policy_naming_the_flags_before_it_starts(capsys, tmp_path):
    ports = Ports.free()
    code = main(["serve", "--repository", str(tmp_path), "--compact-dead-share", "0",
                 "--no-web", "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
                 "--metrics-port", str(ports.metrics)])
    assert code == 2
    assert "--compact-dead-share / --compact-segments: dead_share must be in (0, 1]" in \
        capsys.readouterr().err
