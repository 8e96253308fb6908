"""gRPC clients against a fake tritonclient (no server): model info, validation before the
network call, deadlines, retries on UNAVAILABLE only, error translation."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from prometheus_client import CollectorRegistry
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException

from clickmask.client import (
    AsyncClient,
    Client,
    ClickmaskError,
    CropTransform,
    DeadlineExceededError,
    InferenceError,
    InvalidInputError,
    ModelNotReadyError,
    ServerUnavailableError,
    encode_inputs,
)
from clickmask.client import grpc_client
from clickmask.client._model_info import parse_model_info
from clickmask.client.errors import translate_grpc_error
from clickmask.client.metrics import ClientMetrics

SIZE = 32

CONFIG_PBTXT = """
name: "clickmask"
backend: "python"
max_batch_size: 8
input [
  { name: "image" data_type: TYPE_UINT8 dims: [ 3, 32, 32 ] },
  { name: "clicks" data_type: TYPE_UINT8 dims: [ 2, 32, 32 ] },
  { name: "prev_mask" data_type: TYPE_UINT8 dims: [ 1, 32, 32 ] }
]
output [ { name: "mask_prob" data_type: TYPE_UINT8 dims: [ 1, 32, 32 ] } ]
dynamic_batching { }
parameters { key: "input_size" value { string_value: "32" } }
"""


def make_config(text: str = CONFIG_PBTXT) -> service_pb2.ModelConfigResponse:
    return service_pb2.ModelConfigResponse(config=text_format.Parse(text, model_config_pb2.ModelConfig()))


def make_metadata(size: int = SIZE, batched: bool = True) -> service_pb2.ModelMetadataResponse:
    lead = [-1] if batched else []
    tensor = service_pb2.ModelMetadataResponse.TensorMetadata
    return service_pb2.ModelMetadataResponse(
        name="clickmask",
        versions=["1"],
        platform="python",
        inputs=[
            tensor(name="image", datatype="UINT8", shape=lead + [3, size, size]),
            tensor(name="clicks", datatype="UINT8", shape=lead + [2, size, size]),
            tensor(name="prev_mask", datatype="UINT8", shape=lead + [1, size, size]),
        ],
        outputs=[tensor(name="mask_prob", datatype="UINT8", shape=lead + [1, size, size])],
    )


def server_error(status: str, message: str = "failure") -> InferenceServerException:
    return InferenceServerException(msg=message, status=f"StatusCode.{status}")


class FakeResult:
    def __init__(self, arrays):
        self._arrays = arrays

    def as_numpy(self, name):
        return self._arrays.get(name)


class FakeTriton:
    """Stands in for tritonclient.grpc.InferenceServerClient; ``failures`` are raised first."""

    instances: list["FakeTriton"] = []

    def __init__(self, url, **kwargs):
        self.url = url
        self.failures: list[BaseException] = []
        self.requests: list[dict] = []
        self.timeouts: list[float] = []
        self.closed = False
        FakeTriton.instances.append(self)

    def _maybe_fail(self, timeout):
        self.timeouts.append(timeout)
        if self.failures:
            raise self.failures.pop(0)

    def get_model_metadata(self, model_name, client_timeout=None):
        self._maybe_fail(client_timeout)
        return make_metadata()

    def get_model_config(self, model_name, client_timeout=None):
        self._maybe_fail(client_timeout)
        return make_config()

    def is_model_ready(self, model_name, client_timeout=None):
        if model_name == "clickmask_compact":
            return False  # this fake serves the raw model only (the compact path has its own tests)
        self._maybe_fail(client_timeout)
        return True

    def infer(self, model_name, inputs, outputs=None, client_timeout=None):
        self._maybe_fail(client_timeout)
        arrays = {
            i.name(): np.frombuffer(i._get_content(), np.uint8).reshape(i.shape()) for i in inputs
        }
        self.requests.append({"model": model_name, "datatypes": {i.name(): i.datatype() for i in inputs}, **arrays})
        # "network": the positive click channel, scaled to 0/255
        return FakeResult({"mask_prob": (arrays["clicks"][:, :1] * 255).astype(np.uint8)})

    def close(self):
        self.closed = True


class FakeAioTriton(FakeTriton):
    async def get_model_metadata(self, model_name, client_timeout=None):  # type: ignore[override]
        return FakeTriton.get_model_metadata(self, model_name, client_timeout)

    async def get_model_config(self, model_name, client_timeout=None):  # type: ignore[override]
        return FakeTriton.get_model_config(self, model_name, client_timeout)

    async def infer(self, model_name, inputs, outputs=None, client_timeout=None):  # type: ignore[override]
        return FakeTriton.infer(self, model_name, inputs, outputs, client_timeout)

    async def is_model_ready(self, model_name, client_timeout=None):  # type: ignore[override]
        return FakeTriton.is_model_ready(self, model_name, client_timeout)

    async def close(self):  # type: ignore[override]
        self.closed = True


@pytest.fixture()
def sleeps(monkeypatch):
    recorded: list[float] = []
    monkeypatch.setattr(grpc_client.time, "sleep", recorded.append)
    return recorded


@pytest.fixture()
def client(monkeypatch, sleeps):
    FakeTriton.instances.clear()
    monkeypatch.setattr(grpcclient, "InferenceServerClient", FakeTriton)
    with Client("127.0.0.1:9", timeout_s=2.5, retries=2, backoff_s=0.1) as c:
        yield c


def fake(client) -> FakeTriton:
    return client._triton


def sample_inputs(size=SIZE):
    image = np.full((20, 30, 3), 9, np.uint8)
    from clickmask.client import Click

    return encode_inputs(image, [Click(x=10, y=5)], None, CropTransform.full(20, 30, size))


# --- model info -----------------------------------------------------------------------------


def test_model_info_reads_the_size_and_tensors_from_the_server():
    info = parse_model_info(make_metadata(), make_config())
    assert info.size == SIZE and info.max_batch_size == 8 and info.versions == ("1",)
    assert [s.name for s in info.inputs] == ["image", "clicks", "prev_mask"]
    assert info.input_spec("clicks").shape == (2, SIZE, SIZE)
    assert info.input_spec("image").np_dtype == np.uint8
    assert info.output_name == "mask_prob"


def test_model_info_falls_back_to_fixed_image_dims_without_input_size():
    config = make_config(CONFIG_PBTXT.replace('parameters { key: "input_size" value { string_value: "32" } }', ""))
    assert parse_model_info(make_metadata(), config).size == SIZE


def test_model_info_rejects_a_model_that_breaks_the_contract():
    with pytest.raises(InferenceError, match="input 'image' is UINT8"):
        parse_model_info(make_metadata(size=16), make_config())
    bad_size = make_config(CONFIG_PBTXT.replace('string_value: "32"', 'string_value: "big"'))
    with pytest.raises(InferenceError, match="not an integer"):
        parse_model_info(make_metadata(), bad_size)


def test_size_is_learned_once_with_a_deadline(client):
    assert client.size == SIZE
    assert client.size == SIZE
    assert fake(client).timeouts == [2.5, 2.5]  # metadata + config, fetched once


# --- infer ------------------------------------------------------------------------------------


def test_infer_sends_batched_uint8_contract_tensors_and_returns_1xSxS(client):
    inputs = sample_inputs()
    out = client.infer(inputs)
    assert out.shape == (1, SIZE, SIZE) and out.dtype == np.uint8
    (request,) = fake(client).requests
    assert request["model"] == "clickmask"
    assert request["datatypes"] == {"image": "UINT8", "clicks": "UINT8", "prev_mask": "UINT8"}
    for name, array in inputs.items():
        np.testing.assert_array_equal(request[name], array[None])
    assert fake(client).timeouts[-1] == 2.5


def test_infer_accepts_a_leading_batch_dim_of_one(client):
    inputs = {k: v[None] for k, v in sample_inputs().items()}
    assert client.infer(inputs).shape == (1, SIZE, SIZE)


def test_infer_batch_sends_one_request_for_several(client):
    out = client.infer_batch([sample_inputs(), sample_inputs()])
    assert out.shape == (2, 1, SIZE, SIZE)
    assert len(fake(client).requests) == 1 and fake(client).requests[0]["image"].shape == (2, 3, SIZE, SIZE)


def test_infer_batch_over_max_batch_size_is_rejected_before_the_network_call(client):
    client.size  # noqa: B018 - fetch model info
    with pytest.raises(InvalidInputError, match="max_batch_size 8"):
        client.infer_batch([sample_inputs()] * 9)
    assert fake(client).requests == []


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda d: d.update(image=d["image"].astype(np.float32)), "expected image as uint8 [3, 32, 32]"),
        (lambda d: d.update(clicks=np.zeros((2, 16, 16), np.uint8)), "(S=32), got uint8 of shape (2, 16, 16)"),
        (lambda d: d.pop("prev_mask"), "expected a dict with keys"),
    ],
)
def test_bad_inputs_are_rejected_before_the_network_call(client, change, fragment):
    inputs = sample_inputs()
    change(inputs)
    with pytest.raises(InvalidInputError) as info:
        client.infer(inputs)
    assert fragment in str(info.value)
    assert fake(client).requests == []


def test_session_over_the_client_runs_end_to_end(client):
    image = np.zeros((40, 50, 3), np.uint8)
    session = client.session(image)
    mask = session.click(x=20, y=10)
    assert mask.array.shape == (40, 50) and mask.array[10, 20]
    with pytest.raises(InvalidInputError, match="outside the image"):
        session.click(x=50, y=10)
    assert len(fake(client).requests) == 1


# --- retries and errors -----------------------------------------------------------------------


def test_unavailable_is_retried_with_exponential_backoff(client, sleeps):
    client.size  # noqa: B018
    fake(client).failures = [server_error("UNAVAILABLE"), server_error("UNAVAILABLE")]
    assert client.infer(sample_inputs()).shape == (1, SIZE, SIZE)
    # exponential, each delay shortened by up to half (jitter)
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2


def test_unavailable_after_all_retries_raises_server_unavailable_from_the_original(client, sleeps):
    client.size  # noqa: B018
    original = server_error("UNAVAILABLE", "failed to connect to all addresses")
    fake(client).failures = [server_error("UNAVAILABLE"), server_error("UNAVAILABLE"), original]
    with pytest.raises(ServerUnavailableError, match="failed to connect") as info:
        client.infer(sample_inputs())
    assert info.value.__cause__ is original
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "error, expected",
    [
        (server_error("DEADLINE_EXCEEDED", "Deadline Exceeded"), DeadlineExceededError),
        (server_error("INVALID_ARGUMENT", "unexpected shape for input 'image'"), InferenceError),
        (server_error("INTERNAL", "stub crashed"), InferenceError),
        (server_error("NOT_FOUND", "Request for unknown model: 'clickmask' is not found"), ModelNotReadyError),
        (server_error("UNAVAILABLE", "Request for unknown model: 'cickmask' is not found"), ModelNotReadyError),
    ],
)
def test_other_errors_are_translated_and_not_retried(client, sleeps, error, expected):
    client.size  # noqa: B018
    fake(client).failures = [error]
    with pytest.raises(expected) as info:
        client.infer(sample_inputs())
    assert info.value.__cause__ is error
    assert isinstance(info.value, ClickmaskError)
    assert sleeps == []


class FakeRpcError(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.DEADLINE_EXCEEDED

    def details(self):
        return "Deadline Exceeded"


def test_raw_grpc_errors_are_translated_too():
    error = translate_grpc_error(FakeRpcError(), model_name="clickmask", url="h:1")
    assert isinstance(error, DeadlineExceededError) and "model 'clickmask' at h:1" in str(error)
    assert isinstance(translate_grpc_error(server_error("UNAVAILABLE")), ServerUnavailableError)


def test_model_not_ready_while_fetching_model_info(client):
    fake(client).failures = [server_error("UNAVAILABLE", "Request for unknown model: 'clickmask' is not found")]
    with pytest.raises(ModelNotReadyError, match="check the model name"):
        client.size  # noqa: B018


def test_is_ready_never_raises(client):
    assert client.is_ready()
    fake(client).failures = [server_error("UNAVAILABLE")]
    assert not client.is_ready()


def test_metrics_record_latency_retries_and_errors(monkeypatch, sleeps):
    monkeypatch.setattr(grpcclient, "InferenceServerClient", FakeTriton)
    registry = CollectorRegistry()
    with Client("h:1", retries=1, metrics=ClientMetrics(registry)) as client:
        client.infer(sample_inputs())
        fake(client).failures = [server_error("UNAVAILABLE"), server_error("UNAVAILABLE")]
        with pytest.raises(ServerUnavailableError):
            client.infer(sample_inputs())
    value = registry.get_sample_value
    labels = {"model": "clickmask"}
    assert value("clickmask_client_request_seconds_count", {**labels, "outcome": "ok"}) == 1
    assert value("clickmask_client_request_seconds_count", {**labels, "outcome": "error"}) == 1
    assert value("clickmask_client_retries_total", labels) == 1
    assert value("clickmask_client_errors_total", {**labels, "kind": "ServerUnavailableError"}) == 1


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"url": "http://h:8001"}, "no scheme"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"retries": -1}, "retries"),
    ],
)
def test_bad_client_settings_are_rejected(monkeypatch, kwargs, fragment):
    monkeypatch.setattr(grpcclient, "InferenceServerClient", FakeTriton)
    with pytest.raises(InvalidInputError, match=fragment):
        Client(**kwargs)


def test_close_closes_the_channel(monkeypatch):
    monkeypatch.setattr(grpcclient, "InferenceServerClient", FakeTriton)
    with Client("h:1") as client:
        pass
    assert fake(client).closed


# --- asyncio ----------------------------------------------------------------------------------


def test_async_client_runs_a_session(monkeypatch):
    import tritonclient.grpc.aio as aio

    monkeypatch.setattr(aio, "InferenceServerClient", FakeAioTriton)

    async def scenario():
        async with AsyncClient("h:1", timeout_s=1.5) as client:
            with pytest.raises(ClickmaskError, match="get_model_info"):
                client.size  # noqa: B018
            session = await client.session(np.zeros((40, 50, 3), np.uint8))
            mask = await session.click(x=20, y=10)
            with pytest.raises(InvalidInputError):
                await client.infer({"image": np.zeros(3)})
            return client, mask

    client, mask = asyncio.run(scenario())
    assert mask.array[10, 20] and client._triton.closed
    assert len(client._triton.requests) == 1 and client._triton.timeouts == [1.5, 1.5, 1.5]


def test_async_client_retries_unavailable(monkeypatch):
    import tritonclient.grpc.aio as aio

    monkeypatch.setattr(aio, "InferenceServerClient", FakeAioTriton)
    delays: list[float] = []

    async def no_sleep(delay):
        delays.append(delay)

    monkeypatch.setattr(grpc_client.asyncio, "sleep", no_sleep)

    async def scenario():
        client = AsyncClient("h:1", retries=3, backoff_s=0.05)
        await client.get_model_info()
        client._triton.failures = [server_error("UNAVAILABLE")] * 3 + [server_error("DEADLINE_EXCEEDED")]
        with pytest.raises(DeadlineExceededError):
            await client.infer(sample_inputs())

    asyncio.run(scenario())
    assert [lo <= d <= hi for d, lo, hi in zip(delays, (0.025, 0.05, 0.1), (0.05, 0.1, 0.2))] == [True] * 3


# --- imports ----------------------------------------------------------------------------------


def test_importing_the_client_package_pulls_in_neither_torch_nor_grpc():
    code = (
        "import sys, clickmask.client as c; "
        "assert 'torch' not in sys.modules, 'torch'; "
        "assert 'tritonclient' not in sys.modules and 'grpc' not in sys.modules, 'grpc'; "
        "c.Client; assert 'torch' not in sys.modules, 'torch after Client'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_shipped_model_config_satisfies_the_client():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "model_repository" / "clickmask" / "config.pbtxt"
    if not path.exists():
        pytest.skip(f"{path} not written yet")
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    batched = config.max_batch_size > 0
    tensor = service_pb2.ModelMetadataResponse.TensorMetadata
    data_type = model_config_pb2.DataType.Name

    def metadata_of(t):
        return tensor(name=t.name, datatype=data_type(t.data_type)[len("TYPE_"):], shape=([-1] if batched else []) + list(t.dims))

    metadata = service_pb2.ModelMetadataResponse(
        name=config.name,
        versions=["1"],
        inputs=[metadata_of(t) for t in config.input],
        outputs=[metadata_of(t) for t in config.output],
    )
    info = parse_model_info(metadata, config)
    assert info.output_name == "mask_prob" and info.size == int(config.parameters["input_size"].string_value)


def test_bad_image_is_rejected_before_the_client_asks_the_server(client):
    with pytest.raises(InvalidInputError, match="HxWx3 uint8 RGB"):
        client.session(np.zeros((10, 10), np.uint8))
    assert fake(client).timeouts == []
