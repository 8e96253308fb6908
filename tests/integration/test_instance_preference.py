"""The embedded config's first instance takes the lone requests (rate-limiter priorities), and
with Triton's rate limiter off the two instances take turns. Observed through the CPU time each
stub process spends while 24 requests run one after the other on a real tritonserver."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from clickmask.client import Client
from clickmask.serving.server import ServerConfig, TritonServer

from ..conftest import free_port

REQUESTS = 24


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, clock ticks of 1/100 s


def _busy_share(rate_limit: str, tmp_path) -> list[float]:
    """Each stub's share of the CPU time the clickmask model's stubs spent on the requests."""
    config = ServerConfig(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
                          startup_timeout_s=120.0, rate_limit=rate_limit)
    rng = np.random.default_rng(0)
    inputs = {"image": rng.integers(0, 256, (3, 320, 320), dtype=np.uint8),
              "clicks": np.zeros((2, 320, 320), np.uint8), "prev_mask": np.zeros((1, 320, 320), np.uint8)}
    with TritonServer(config, log_path=tmp_path / f"tritonserver-{rate_limit}.log") as server:
        pids = server.model_stub_pids("clickmask")
        assert len(pids) == 2, "the embedded config runs two instances"
        with Client(config.grpc_url, wire="raw") as client:
            client.infer(inputs)
            before = [_cpu_seconds(pid) for pid in pids]
            for _ in range(REQUESTS):
                client.infer(inputs)
            spent = [_cpu_seconds(pid) - start for pid, start in zip(pids, before)]
    total = sum(spent)
    assert total > 0.2, f"the stubs spent {total:.2f} s on {REQUESTS} requests: they did not run them"
    return sorted((s / total for s in spent), reverse=True)


@pytest.mark.parametrize("rate_limit, busiest", [("execution_count", (0.9, 1.0)), ("off", (0.3, 0.75))])
def test_lone_requests_stay_in_the_preferred_instance_only_with_the_rate_limiter(rate_limit, busiest, tmp_path):
    share = _busy_share(rate_limit, tmp_path)
    low, high = busiest
    assert low <= share[0] <= high, f"--rate-limit={rate_limit}: the busiest stub did {share[0]:.0%} of the work"
