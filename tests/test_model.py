from __future__ import annotations

import threading
import time

from edge_runtime.model.session import FairGate
from tests.conftest import wait_for


def test_a_busy_runner_cannot_starve_another():
    gate = FairGate(1)
    stop = threading.Event()
    order: list[str] = []

    def busy() -> None:
        while not stop.is_set():
            with gate:
                order.append("camera")
                time.sleep(0.005)

    thread = threading.Thread(target=busy)
    thread.start()
    assert wait_for(lambda: order.count("camera") >= 3, timeout=5)  # the other thread keeps the gate busy
    start = time.monotonic()
    with gate:
        waited = time.monotonic() - start
        order.append("upload")
    stop.set()
    thread.join()
    assert waited < 0.1  # at most about one run of the other thread
    assert "upload" in order


def test_slots_bound_concurrency():
    gate = FairGate(2)
    inside, peak = 0, 0
    lock = threading.Lock()

    def run() -> None:
        nonlocal inside, peak
        with gate:
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2
