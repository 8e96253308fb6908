"""``ServerConfig.frontend_nice``: tritonserver's own threads at a lower priority, children not."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from clickmask.errors import ServerStartError
from clickmask.serving.server import ServerConfig, renice_threads

CHILD = """
import subprocess, sys, threading, time
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
print(child.pid, flush=True)
time.sleep(30)
"""


def _nice(pid: int, tid: int | str) -> int:
    with open(f"/proc/{pid}/task/{tid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[16])


def test_every_thread_of_the_process_is_reniced_and_its_child_process_is_not():
    process = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(process.stdout.readline())
        time.sleep(0.2)
        tids = os.listdir(f"/proc/{process.pid}/task")
        assert len(tids) >= 2
        assert renice_threads(process.pid, 7) == len(tids)
        assert {_nice(process.pid, tid) for tid in tids} == {7}
        assert _nice(child, child) == 0  # the "stub" keeps its priority
    finally:
        process.kill()
        if child is not None:
            os.kill(child, signal.SIGKILL)


def test_a_vanished_process_changes_nothing():
    assert renice_threads(2 ** 22 + 12345, 5) == 0


@pytest.mark.parametrize("value", [-1, 20])
def test_frontend_nice_must_lower_the_priority_within_range(value):
    with pytest.raises(ServerStartError, match="frontend_nice must lie in 0..19"):
        ServerConfig(frontend_nice=value)
