"""The change log (core/live/log.py): what append acknowledges survives a reopen, a torn last
append is cut off, damage is refused, and appends from two processes never interleave."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fusionrank.core.live.changes import parse_changes
from fusionrank.core.live.log import HEADER, LOG_FILE, ChangeLog, ChangeLogError


def change_set(i: int, size: int = 3):
    return parse_changes([json.dumps({"op": "upsert", "product": {
        "product_id": f"P{i}-{j}", "title": f"Product {i} part {j}", "price": i + j / 10}})
        for j in range(size)] + [json.dumps({"op": "delete", "product_id": f"OLD{i}"})])


def test_appended_sets_are_read_back_in_order_after_a_reopen(tmp_path):
    log = ChangeLog(tmp_path)
    assert log.last_sequence == 0 and log.last_accepted_at is None
    assert [log.append(change_set(i)) for i in range(3)] == [1, 2, 3]
    again = ChangeLog(tmp_path)
    assert again.last_sequence == 3 and again.torn_bytes == 0
    assert again.last_accepted_at == pytest.approx(log.last_accepted_at)
    assert [(r.sequence, r.changes) for r in again.records()] == [
        (i + 1, change_set(i)) for i in range(3)]
    assert [r.sequence for r in again.records(after=1)] == [2, 3]
    assert again.pending(applied=1) == 2


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size + 5])
def test_a_torn_last_append_is_cut_off_and_the_sequence_goes_on(tmp_path, cut):
    log = ChangeLog(tmp_path)
    log.append(change_set(0))
    log.append(change_set(1))
    path = tmp_path / LOG_FILE
    whole = path.read_bytes()
    second = next(r.offset for r in log.records() if r.sequence == 2)
    path.write_bytes(whole[:second + cut])  # the crash came during the second append
    reopened = ChangeLog(tmp_path)
    assert reopened.last_sequence == 1 and reopened.torn_bytes == cut
    assert path.stat().st_size == second
    assert reopened.append(change_set(5)) == 2
    assert [r.changes for r in ChangeLog(tmp_path).records()] == [change_set(0), change_set(5)]


def test_a_damaged_record_with_records_after_it_is_refused_naming_the_offset(tmp_path):
    log = ChangeLog(tmp_path)
    for i in range(3):
        log.append(change_set(i))
    path = tmp_path / LOG_FILE
    data = bytearray(path.read_bytes())
    second = next(r.offset for r in log.records() if r.sequence == 2)
    data[second + HEADER.size + 3] ^= 0xFF  # a payload byte of the second record
    path.write_bytes(bytes(data))
    with pytest.raises(ChangeLogError, match=f"damaged at byte {second} .a checksum mismatch"):
        ChangeLog(tmp_path)
    assert path.read_bytes() == bytes(data)  # nothing cut


def test_dropping_compacted_records_keeps_the_rest_and_the_count(tmp_path):
    log = ChangeLog(tmp_path)
    for i in range(4):
        log.append(change_set(i))
    log.drop_through(2)
    assert [r.sequence for r in ChangeLog(tmp_path).records()] == [3, 4]
    log.drop_through(4)  # all of them: the log remembers the last sequence
    emptied = ChangeLog(tmp_path)
    assert list(emptied.records()) == [] and emptied.last_sequence == 4
    assert emptied.append(change_set(9)) == 5
    assert [r.sequence for r in ChangeLog(tmp_path).records()] == [5]


APPENDER = """
import json, sys
from fusionrank.core.live.changes import parse_changes
from fusionrank.core.live.log import ChangeLog
log = ChangeLog(sys.argv[1])
for i in range(40):
    log.append(parse_changes([json.dumps({"op": "delete", "product_id": f"{sys.argv[2]}{i}-{j}"})
                              for j in range(50)]))
"""


def test_appends_from_two_processes_are_logged_one_after_the_other(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(tmp_path), name])
               for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    records = list(ChangeLog(tmp_path).records())
    assert [r.sequence for r in records] == list(range(1, 81))
    for record in records:  # each set whole: one writer's 50 deletes of one of its sets
        ids = record.changes.deletes
        assert len(ids) == 50 and len({i.split("-")[0] for i in ids}) == 1
    for name in ("a", "b"):  # and each writer's sets in the order it sent them
        mine = [r.changes.deletes[0] for r in records if r.changes.deletes[0][0] == name]
        assert mine == [f"{name}{i}-0" for i in range(40)]


def test_a_log_compacted_by_another_handle_is_read_again_before_an_append(tmp_path):
    # Two handles on one log, as two processes hold it: one drops what a base holds (the file
    # is replaced), then the other appends. The append goes into the new file, numbered after
    # everything the first handle logged, and nothing is lost.
    ours, theirs = ChangeLog(tmp_path), ChangeLog(tmp_path)
    for i in range(3):
        theirs.append(change_set(i))
    theirs.drop_through(2)
    assert ours.append(change_set(7)) == 4
    assert [(r.sequence, r.changes) for r in ChangeLog(tmp_path).records()] == [
        (3, change_set(2)), (4, change_set(7))]
    assert [r.sequence for r in theirs.records()] == [3, 4]  # the other handle sees it too
