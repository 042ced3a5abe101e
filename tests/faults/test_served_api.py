"""The API process of `make serve` killed with SIGKILL in the middle of a request: that request is answered 502 (as API
Gateway answers a crashed function), a new process serves the next one, and the request's item is not lost."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path

from scripts.local import load
from tests.support.fault_proxy import COMPLETE
from tests.support.ledger import Ledger, settle
from tests.support.local_aws import Table
from tests.support.served_api import (
    CLIENT_TIMEOUT_S,
    Background,
    api_behind_proxy,
    chat,
    hold_result_writes,
    item,
    post,
    wait_for,
)


def test_the_function_killed_mid_request_is_answered_502_and_replaced_and_its_item_is_not_lost(
    tiny_model: Path, ledger: Ledger
) -> None:
    with api_behind_proxy(tiny_model) as (local, proxy):
        # GIVEN a request in the middle of its invocation: generated, its result's write held, its item RUNNING
        held = hold_result_writes(proxy)
        killed = Background(local, "/chat", chat("the request whose function dies"))
        assert held.held.wait(CLIENT_TIMEOUT_S)
        [(item_id, stored)] = load.table_items(local.table_endpoint, local.table_name).items()
        assert stored["status"] == "RUNNING"
        first_pid = local.function_pid
        assert first_pid is not None

        # WHEN its function's process is killed
        os.kill(first_pid, signal.SIGKILL)
        held.forward_held = False  # what the dead process had sent never lands
        held.released.set()

        # THEN that request is answered 502 in the API's error shape, at once
        status, _, body = killed.result()
        assert status == 502
        assert body["error"]["type"] == "InternalError"
        # AND a new process answers the next request
        status, _, body = post(local, "/chat", chat("the next request"))
        assert (status, body["status"]) == (200, "DONE")
        assert local.restarts == 1
        assert local.function_pid not in (None, first_pid)

        # AND the killed request's item is not lost: RUNNING under a lease that runs out
        stored = item(local, item_id)
        assert stored["status"] == "RUNNING"
        lease_left_s = (datetime.fromisoformat(stored["lease_until"]) - datetime.now().astimezone()).total_seconds()
        time.sleep(max(lease_left_s, 0) + 0.5)
        # after which the same request is generated again and stored once
        status, _, body = post(local, "/chat", chat("the request whose function dies"))
        assert (status, body["id"], body["status"], body["cached"]) == (200, item_id, "DONE", False)
        stored = item(local, item_id)
        assert (stored["status"], stored["attempts"]) == ("DONE", 2)  # the killed claim, and the one that finished
        assert stored["output"] == body["output"]
        # one generation died with its process before its write; one was stored
        wait_for(lambda: local.generations()[item_id] == 2, "both generations in the function's log")
        settled = settle(Table(local.table_name, local.table_endpoint), [item_id])
    assert (settled.lost, settled.problems, len(settled.done)) == ([], [], 1)
    ledger.record(
        "SIGKILL mid-request (result generated, not yet written)",
        "API process of make serve",
        1,
        settled,
        proxy.written(COMPLETE),
        "502 for the request; a new process for the next; the retried request takes the expired lease",
    )
