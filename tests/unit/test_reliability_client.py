"""How the gRPC client behaves under overload, restarts, crashed backends and restricted APIs.

The error texts are the ones the real tritonserver 2.51 sends (recorded in docs/reliability.md);
the integration tests check the same paths against the real server.
"""
from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from clickmask.client import (
    Client,
    InferenceError,
    InvalidInputError,
    ModelNotReadyError,
    PermissionDeniedError,
    ServerOverloadedError,
    ServerUnavailableError,
)
from clickmask.client import grpc_client
from clickmask.client.errors import translate_grpc_error

from .test_client_grpc import FakeTriton, make_metadata, sample_inputs

QUEUE_FULL = ("StatusCode.UNAVAILABLE", "[request id: <id_unknown>] Exceeds maximum queue size")
QUEUE_TIMEOUT = ("StatusCode.UNAVAILABLE", "[request id: <id_unknown>] Request timeout expired")
STUB_DEAD = ("StatusCode.INTERNAL", "Stub process 'clickmask_0_0' is not healthy.")
RESTRICTED = ("StatusCode.UNAVAILABLE",
              "This protocol is restricted, expecting header 'triton-grpc-protocol-clickmask-admin-key'")


def triton_error(status_and_message):
    status, message = status_and_message
    return InferenceServerException(msg=message, status=status)


class Clock:
    """time.monotonic and time.sleep that only move when the client sleeps or a call takes time."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class SlowFake(FakeTriton):
    """Each call costs ``call_s`` of the fake clock; failures are raised first."""

    clock: Clock
    call_s = 0.0

    def _maybe_fail(self, timeout):
        self.clock.now += self.call_s
        super()._maybe_fail(timeout)

    def get_model_metadata(self, model_name, client_timeout=None, headers=None):
        self.headers = headers
        return super().get_model_metadata(model_name, client_timeout)

    def get_model_config(self, model_name, client_timeout=None, headers=None):
        return super().get_model_config(model_name, client_timeout)

    def infer(self, model_name, inputs, outputs=None, client_timeout=None, headers=None):
        return super().infer(model_name, inputs, outputs, client_timeout)


@pytest.fixture()
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(grpc_client.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(grpc_client.time, "sleep", clock.sleep)
    SlowFake.clock = clock
    SlowFake.call_s = 0.0
    monkeypatch.setattr(grpcclient, "InferenceServerClient", SlowFake)
    return clock


@pytest.mark.parametrize(
    "raw, expected, fragment",
    [
        (QUEUE_FULL, ServerOverloadedError, "past capacity"),
        (QUEUE_TIMEOUT, ServerOverloadedError, "past capacity"),
        (STUB_DEAD, ServerUnavailableError, "backend process died"),
        (RESTRICTED, PermissionDeniedError, "restricted to the admin key"),
        (("StatusCode.UNAVAILABLE", "failed to connect to all addresses"), ServerUnavailableError, "is running"),
        (("StatusCode.INVALID_ARGUMENT", "input byte size mismatch for input 'image'"), InferenceError, "'image'"),
    ],
    ids=["queue-full", "queue-timeout", "stub-dead", "restricted", "down", "invalid"],
)
def test_real_triton_errors_map_to_errors_that_say_what_to_do(raw, expected, fragment):
    error = translate_grpc_error(triton_error(raw), model_name="clickmask", url="h:1")
    assert type(error) is expected and fragment in str(error)


def test_overload_is_retried_with_jittered_backoff_and_succeeds(clock):
    with Client("h:1", timeout_s=5, retries=3, backoff_s=0.2) as client:
        client.size  # noqa: B018
        client._triton.failures = [triton_error(QUEUE_FULL)] * 2
        assert client.infer(sample_inputs()).shape[0] == 1
    assert 0.1 <= clock.sleeps[0] <= 0.2 and 0.2 <= clock.sleeps[1] <= 0.4


def test_jitter_spreads_clients_that_were_rejected_together(clock):
    delays = set()
    for _ in range(20):
        client = Client("h:1", retries=1, backoff_s=0.2)
        delays.add(client._should_retry(ServerOverloadedError("x"), 0, clock.now + 10))
    assert len(delays) > 15 and all(0.1 <= d <= 0.2 for d in delays)


def test_retries_stop_at_the_deadline_and_each_attempt_gets_only_what_is_left(clock):
    SlowFake.call_s = 0.4  # every attempt takes 0.4 s before it fails
    with Client("h:1", timeout_s=1.0, retries=10, backoff_s=0.1, jitter=0.0) as client:
        client.size  # noqa: B018
        start = clock.now
        client._triton.failures = [triton_error(QUEUE_FULL)] * 10
        with pytest.raises(ServerOverloadedError):
            client.infer(sample_inputs())
    elapsed = clock.now - start
    timeouts = client._triton.timeouts[2:]
    assert elapsed <= 1.0 + 1e-9, f"the call ran {elapsed:.2f} s past its 1 s deadline"
    assert timeouts[0] == 1.0 and all(b < a for a, b in zip(timeouts, timeouts[1:]))
    assert len(timeouts) < 10  # the deadline, not the retry count, ended it


@pytest.mark.parametrize("raw", [RESTRICTED, ("StatusCode.INVALID_ARGUMENT", "bad")])
def test_errors_that_a_retry_cannot_fix_are_not_retried(clock, raw):
    with Client("h:1", retries=3) as client:
        client.size  # noqa: B018
        client._triton.failures = [triton_error(raw)]
        with pytest.raises((PermissionDeniedError, InferenceError)):
            client.infer(sample_inputs())
    assert clock.sleeps == []


def test_a_crashed_backend_is_retried_so_a_supervised_restart_is_ridden_out(clock):
    with Client("h:1", timeout_s=10, retries=5, backoff_s=0.5) as client:
        client.size  # noqa: B018
        client._triton.failures = [triton_error(STUB_DEAD), triton_error(("StatusCode.UNAVAILABLE", "Socket closed"))]
        assert client.infer(sample_inputs()).shape[0] == 1
    assert len(clock.sleeps) == 2


def test_a_model_between_versions_is_retried_but_an_unknown_model_is_not(clock):
    between = ("StatusCode.NOT_FOUND", "Request for unknown model: 'clickmask' has no available versions")
    unknown = ("StatusCode.NOT_FOUND", "Request for unknown model: 'cickmask' is not found")
    with Client("h:1", timeout_s=10, retries=3) as client:
        client.size  # noqa: B018
        client._triton.failures = [triton_error(between)]
        assert client.infer(sample_inputs()).shape[0] == 1
        assert len(clock.sleeps) == 1
        client._triton.failures = [triton_error(unknown)]
        with pytest.raises(ModelNotReadyError, match="check the model name"):
            client.infer(sample_inputs())
    assert len(clock.sleeps) == 1


def test_a_restricted_model_config_falls_back_to_the_metadata(clock):
    with Client("h:1") as client:
        def restricted(*args, **kwargs):
            raise triton_error(RESTRICTED)

        client._triton.get_model_config = restricted
        info = client.model_info
        assert info.size == int(make_metadata().inputs[0].shape[-1])
        assert info.max_batch_size == 0  # unknown; the server enforces its own
        assert client.infer(sample_inputs()).shape[0] == 1


def test_headers_go_with_every_call(clock):
    with Client("h:1", headers={"triton-grpc-protocol-clickmask-admin-key": "k" * 20}) as client:
        client.size  # noqa: B018
    assert client._triton.headers == {"triton-grpc-protocol-clickmask-admin-key": "k" * 20}


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"root_certificates": "ca.pem"}, "only apply with ssl=True"),
        ({"ssl": True, "root_certificates": "/nonexistent/ca.pem"}, "cannot be read"),
        ({"jitter": 1.5}, "jitter"),
        ({"headers": {"k": 1}}, "headers must map str to str"),
    ],
)
def test_bad_tls_and_retry_settings_are_refused(clock, kwargs, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        Client("h:1", **kwargs)


def test_tls_settings_reach_tritonclient(clock, tmp_path, monkeypatch):
    seen = {}

    class Recording(SlowFake):
        def __init__(self, url, **kwargs):
            seen.update(kwargs)
            super().__init__(url)

    monkeypatch.setattr(grpcclient, "InferenceServerClient", Recording)
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    Client("h:1", ssl=True, root_certificates=str(ca)).close()
    assert seen == {"ssl": True, "root_certificates": str(ca), "private_key": None, "certificate_chain": None}


def test_inputs_built_for_another_size_are_refused_before_the_network_call(clock):
    with Client("h:1") as client:
        bad = {name: array[..., :-1, :-1] for name, array in sample_inputs().items()}
        with pytest.raises(InvalidInputError, match="for this model"):
            client.infer(bad)
        with pytest.raises(InvalidInputError, match="uint8"):
            client.infer({name: array.astype(np.float32) for name, array in sample_inputs().items()})
    assert client._triton.requests == []
