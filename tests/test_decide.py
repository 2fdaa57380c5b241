"""Policy is data: changing numbers in the bundle's data files changes decisions, no Python touched."""

from __future__ import annotations

import datetime as dt

from server.model import Snapshot
from server.registry import build_decider
from tests.support.bundles import edit_yaml, set_value

ORDER_ID = "5b0c0f4e-1c1a-4bd4-9a57-2f7f1b1f2a01"


def at_home(order_created: str = "2026-03-02T15:00:00+00:00") -> dict:
    return {
        "id": ORDER_ID,
        "created_at": order_created,
        "status": "collecting_sample",
        "details": {"type": "at_home_phlebotomy", "data": {"id": "d1"}},
        "events": [
            {
                "id": 1,
                "created_at": order_created,
                "status": "collecting_sample.at_home_phlebotomy.appointment_scheduled",
            }
        ],
    }


def kit_order(created: str) -> dict:
    return {
        "id": ORDER_ID,
        "created_at": created,
        "status": "received",
        "details": {"type": "testkit", "data": {"id": "d2", "shipment": None}},
        "events": [{"id": 1, "created_at": created, "status": "received.testkit.ordered"}],
    }


def follow_ups(decider, snapshot: Snapshot) -> set[str]:
    return {f.code for f in decider.decide(snapshot).follow_ups}


def test_refund_window_and_cutoff_come_from_the_bundle_data(bundle_copy):
    """24 h -> 48 h and 13:00 -> 11:00 in data/settings.yaml flip the refund and ship-day follow-ups."""
    now = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
    appointment = {
        "order_id": ORDER_ID,
        "status": "confirmed",
        "provider": "getlabs",
        "start_at": "2026-03-11T20:00:00+00:00",
    }  # 32 h ahead
    refund = Snapshot("cancel_order", at_home(), appointment, now)
    # Tuesday 2026-03-10 11:30 EDT (15:30Z): before 13:00, after 11:00; `now` is that evening.
    kit = Snapshot(
        "cancel_order", kit_order("2026-03-10T15:30:00+00:00"), None, dt.datetime(2026, 3, 10, 22, 0, tzinfo=dt.UTC)
    )

    original = build_decider(bundle_copy)
    assert "FULL_REFUND" in follow_ups(original, refund)
    assert "SHIPMENT_IMMINENT" in follow_ups(original, kit)
    original.close()

    settings = bundle_copy / "data/settings.yaml"
    assert set_value(settings, ["params", "refund_window"], "48h") == "24h"
    assert set_value(settings, ["shipping", "cutoff"], "11:00") == "13:00"

    changed = build_decider(bundle_copy)
    assert "NON_REFUNDABLE" in follow_ups(changed, refund)
    assert "FULL_REFUND" not in follow_ups(changed, refund)
    assert "SHIPMENT_IMMINENT" not in follow_ups(changed, kit)
    messages = [f.message for f in changed.decide(refund).follow_ups]
    assert any("48h" in m for m in messages)
    changed.close()


def test_a_status_moved_between_lists_changes_the_decision(bundle_copy):
    """Moving a status from the cancellable list to the not-cancellable one is a data-only change."""
    moved = "collecting_sample.at_home_phlebotomy.draw_completed"

    def move(doc) -> None:
        rules = {r["id"]: r for r in doc["rules"]}
        rules["at_home_cancellable"]["when"]["status"]["in"].remove(moved)
        rules["not_cancellable_state"]["when"]["status"]["in"].append(moved)

    edit_yaml(bundle_copy / "policies/cancel_order.yaml", move)
    order = at_home()
    order["events"][0]["status"] = "collecting_sample.at_home_phlebotomy.draw_completed"
    decision = build_decider(bundle_copy).decide(
        Snapshot("cancel_order", order, None, dt.datetime(2026, 3, 10, tzinfo=dt.UTC))
    )
    assert (decision.outcome, [r.code for r in decision.reasons]) == ("DENY", ["NOT_CANCELLABLE_STATE"])


def test_a_ship_day_past_the_calendar_is_an_error_naming_the_setting(fixture_bundle):
    """A kit ordered on the calendar's last day ships after it: an error, not a guessed day."""
    import pytest

    from server.errors import EvalError
    from server.facts import calendar_end

    decider = build_decider(fixture_bundle)
    try:
        end = calendar_end(decider.bundle.settings)
        assert end is not None
        inside = kit_order(f"{end.year}-06-01T15:00:00+00:00")
        decided = decider.decide(Snapshot("cancel_order", inside, None, dt.datetime(end.year, 6, 1, 16, tzinfo=dt.UTC)))
        assert decided.outcome == "ALLOW"  # a ship day inside the calendar decides as usual
        late = kit_order(f"{end.isoformat()}T23:00:00+00:00")  # after the cut-off: ships the next business day
        with pytest.raises(EvalError) as err:
            decider.decide(Snapshot("cancel_order", late, None, dt.datetime(end.year, 12, 31, 23, 30, tzinfo=dt.UTC)))
    finally:
        decider.close()
    assert err.value.code == "eval_calendar_ended"
    assert f"past the end of the business-day calendar ({end.isoformat()})" in err.value.message
    assert (
        f"add the holidays of {end.year + 1} to `calendars.us_federal.holidays` in data/settings.yaml"
        in err.value.message
    )


def test_decision_ids_are_unique_across_threads_and_forked_workers():
    """Ids come from the OS in blocks: every one is 96 random bits in hex, no two alike in
    a process (8 threads at once) or across a fork (the child starts a block of its own)."""
    import subprocess
    import sys
    import threading

    from server.decide import _decision_id

    _decision_id()  # the parent holds a partly used block when it forks
    ids: list[str] = []

    def take() -> None:
        got = [_decision_id() for _ in range(2000)]
        ids.extend(got)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == len(set(ids)) == 16_000
    assert all(len(i) == 24 and int(i, 16) >= 0 for i in ids)

    # The fork in a fresh interpreter: forking this multi-threaded test process is unsafe.
    script = """
import os
from server.decide import _decision_id
_decision_id()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(read)
    os.write(write, " ".join(_decision_id() for _ in range(600)).encode())
    os._exit(0)
os.close(write)
with os.fdopen(read) as pipe:
    child = pipe.read().split()
os.waitpid(pid, 0)
parent = [_decision_id() for _ in range(600)]
print(len(child), len(set(child) & set(parent)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["600", "0"], done.stdout + done.stderr
