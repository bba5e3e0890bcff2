"""A signal that Linux hands to a worker thread still reaches the main thread's handler while it
waits on that worker (zooframe.execution.waiting)."""

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from zooframe.execution.waiting import wait_for


def test_ctrl_c_delivered_to_a_worker_thread_interrupts_the_main_threads_wait():
    release, started = threading.Event(), threading.Event()

    def hung_solver():
        started.set()
        release.wait(30)  # without the slices, the main thread would sleep until here
        return "finished"

    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(hung_solver)
        started.wait(10)
        worker = next(t for t in threading.enumerate() if t is not threading.main_thread() and t.name.startswith(
            "ThreadPoolExecutor"))
        threading.Timer(0.3, signal.pthread_kill, (worker.ident, signal.SIGINT)).start()
        try:
            with pytest.raises(KeyboardInterrupt):
                wait_for([future])
            assert not future.done(), "the interrupt came only after the work ended"
        finally:
            release.set()


def test_wait_for_returns_the_futures_not_done_at_the_timeout():
    release = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        done, hung = pool.submit(lambda: 1), pool.submit(release.wait, 30)
        try:
            assert wait_for([done, hung], timeout_s=0.5) == {hung}
        finally:
            release.set()
    assert wait_for([done, hung], timeout_s=0.5) == set()
