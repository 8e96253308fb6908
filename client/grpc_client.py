"""gRPC clients for the ``clickmask`` model on Triton: :class:`Client` and :class:`AsyncClient`.

Both learn the network size S and the tensor names/dtypes from the server (model metadata
and the ``input_size`` parameter of the model config), validate inputs before sending,
put a deadline on every call (``timeout_s``, retries included), retry with jittered
exponential backoff on UNAVAILABLE only (server down, restarting, queue full, crashed backend
process) while the deadline allows, and translate gRPC errors into
:mod:`clickmask.client.errors` (raised ``from`` the original). ``ssl=True`` talks gRPC over
TLS; ``headers`` go with every call (the admin key of a locked-down server, for example).

Example::

    with Client("127.0.0.1:8001") as client:
        session = client.session(image)          # HxWx3 uint8 RGB
        mask = session.click(x=120, y=80)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ._model_info import CONTRACT_INPUTS, ModelInfo, TensorSpec, check_inputs, parse_model_info
from ._validate import check_rgb_image
from .compact import (COMPACT_INPUTS, COMPACT_MODEL, COMPACT_OUTPUT, MISS_PREFIX, crop_key, decode_png, encode_flip,
                      encode_png, merge_flip, mirror, pack_clicks)
from .errors import (
    ClickmaskError,
    InferenceError,
    InvalidInputError,
    ModelNotReadyError,
    PermissionDeniedError,
    ServerUnavailableError,
    _status_name,
    translate_grpc_error,
)
from .metrics import ClientMetrics
from .raw_request import MODEL_INFER_METHOD, encode_infer_request
from .session import AsyncSession, Session, _initial_state
from .shm import Region, RegionPool, admin_headers, is_missing_region, shm_request

__all__ = ["Client", "AsyncClient", "ModelInfo", "TensorSpec", "DEFAULT_URL", "DEFAULT_MODEL_NAME",
           "COMPRESSION_ALGORITHMS", "WIRE_MODES", "WIRE_ENV"]

logger = logging.getLogger(__name__)

DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_MODEL_NAME = "clickmask"
#: gRPC message compression a client can ask for on its inference requests.
COMPRESSION_ALGORITHMS = ("gzip", "deflate")
_GRPC_ERRORS = (InferenceServerException, grpc.RpcError)
#: ``wire``: "auto" uses shared memory on the server's machine when the client holds the admin
#: key, else the compact entry on a remote server that offers it, else raw tensors; "compact"
#: requires the compact entry, "shm" requires shared memory, "raw" always sends the contract's
#: tensors in the gRPC message.
WIRE_MODES = ("auto", "compact", "raw", "shm")
#: Environment variable that picks ``wire`` for clients that are not given one.
WIRE_ENV = "CLICKMASK_WIRE"
#: How many crop keys a client remembers having sent (the server may still have dropped any).
_SENT_KEYS = 4096
#: Largest batch sent through the compact entry (its max_batch_size); larger ones go raw.
_COMPACT_BATCH = 8


def is_loopback(url: str) -> bool:
    """Whether ``host:port`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    host = url.rsplit(":", 1)[0].strip("[]").lower() if ":" in url else url.lower()
    return host == "localhost" or host.startswith("127.") or host == "::1"


class _Miss(Exception):
    """The compact entry did not hold a crop the request named (NOT_FOUND, MISS_PREFIX)."""


class _ShmRefused(Exception):
    """The server would not register a shared-memory region (no or a wrong admin key, another
    machine behind a loopback address, or no shared-memory support)."""
#: A retry is not started when less than this is left of the call's deadline.
_MIN_ATTEMPT_S = 0.05
T = TypeVar("T")


class _ClientBase:
    """Configuration, validation and error handling shared by the two clients."""

    def __init__(
        self,
        url: str,
        model_name: str,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        metrics: ClientMetrics | None,
        jitter: float = 0.5,
        headers: Mapping[str, str] | None = None,
        compression: str | None = None,
        wire: str | None = None,
    ) -> None:
        if not isinstance(url, str) or not url or "://" in url:
            raise InvalidInputError(f"expected url as 'host:port' (no scheme), got {url!r}")
        if not timeout_s > 0:
            raise InvalidInputError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInputError(f"retries must be an int >= 0, got {retries!r}")
        if not backoff_s >= 0:
            raise InvalidInputError(f"backoff_s must be >= 0 seconds, got {backoff_s}")
        if not 0 <= jitter <= 1:
            raise InvalidInputError(f"jitter must lie in [0, 1] (a fraction of the delay), got {jitter}")
        if headers is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise InvalidInputError("headers must map str to str, e.g. {'triton-grpc-protocol-<name>': '<key>'}")
        self.url = url
        self.model_name = model_name
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.backoff_s = float(backoff_s)
        self.jitter = float(jitter)
        if compression is not None and compression not in COMPRESSION_ALGORITHMS:
            raise InvalidInputError(
                f"compression must be one of {', '.join(COMPRESSION_ALGORITHMS)} or None, got {compression!r}"
            )
        # Only sent when given, so that servers and test doubles without headers work alike.
        self._kwargs: dict[str, Any] = {"headers": dict(headers)} if headers else {}
        #: gRPC compression of inference requests ("gzip", "deflate") or None.
        self.compression = compression
        self._infer_kwargs: dict[str, Any] = dict(self._kwargs)
        if compression is not None:
            self._infer_kwargs["compression_algorithm"] = compression
        self._random = random.Random()
        self._raw_infer: Any = None  # see _raw_method
        self._metrics = metrics
        if metrics is not None:
            metrics.initialize(model_name)
        self._info: ModelInfo | None = None
        wire = wire if wire is not None else (os.environ.get(WIRE_ENV, "").strip().lower() or "auto")
        if wire not in WIRE_MODES:
            raise InvalidInputError(f"wire must be one of {', '.join(WIRE_MODES)} (or {WIRE_ENV}), got {wire!r}")
        #: "auto", "compact" or "raw" (see :data:`WIRE_MODES`).
        self.wire = wire
        # decided on first use; "auto" never takes it over loopback, where bytes cost nothing and
        # the compact codec costs CPU and latency (docs/wire.md, "Choosing a path")
        self._compact: bool | None = False if wire in ("raw", "shm") or (wire == "auto" and is_loopback(url)) else None
        # shared memory: asked for, or "auto" on this machine with the admin key that opens it
        self._admin = admin_headers(headers)
        if wire == "shm" and self._admin is None:
            raise InvalidInputError(
                "wire='shm' needs the server's admin key (shared memory is an admin API): pass "
                "headers={'triton-grpc-protocol-clickmask-admin-key': KEY} or set CLICKMASK_ADMIN_KEY; "
                "'clickmask serve' prints the key")
        self._shm_on = wire == "shm" or (wire == "auto" and is_loopback(url) and self._admin is not None)
        self._shm_pool: RegionPool | None = None
        self._shm_lock = threading.Lock()
        self._sent_keys: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._keys_lock = threading.Lock()
        #: Compact requests re-sent with their crops after a NOT_FOUND (a restart, an eviction, another replica).
        self.crop_resends = 0

    @property
    def compact(self) -> bool | None:
        """Whether inference goes through the compact entry (None until the first call decides)."""
        return self._compact

    @property
    def shared_memory(self) -> bool:
        """Whether raw tensors go through shared memory (False once the server refused it)."""
        return self._shm_on

    def _take_region(self, info: ModelInfo, count: int) -> Region:
        with self._shm_lock:
            if self._shm_pool is None:
                self._shm_pool = RegionPool(info.size)
            pool = self._shm_pool
        return pool.take(count)

    def _shm_refused(self, refused: _ShmRefused) -> None:
        """The server refused a region: "auto" sends raw tensors from now on, "shm" fails."""
        if self.wire == "shm":
            raise PermissionDeniedError(
                f"{self.url} refused the shared-memory region ({refused}); check the admin key, and that "
                "the server runs on this machine (a container needs the host's /dev/shm), or use wire='raw'"
            ) from refused
        logger.warning("%s refused shared memory (%s); sending raw tensors", self.url, refused)
        self._shm_on = False

    def _compact_request(self, requests: Sequence[dict[str, np.ndarray]], flips: Sequence[tuple[int, int] | None],
                         all_crops: bool) -> tuple[dict[str, np.ndarray], int]:
        """The compact BYTES tensors of ``requests`` (checked raw contract tensors, one each), with
        each crop's PNG when the client has not sent it before or ``all_crops``; and their bytes."""
        fields: dict[str, list[bytes]] = {name: [] for name in COMPACT_INPUTS}
        for request, flip in zip(requests, flips):
            image = request["image"].reshape(request["image"].shape[-3:])
            key = crop_key(image)
            with self._keys_lock:
                known = key in self._sent_keys and not all_crops
                self._sent_keys[key] = None
                self._sent_keys.move_to_end(key)
                while len(self._sent_keys) > _SENT_KEYS:
                    self._sent_keys.popitem(last=False)
            if request["clicks"].max(initial=0) > 1:
                raise InvalidInputError("clicks must hold 0/1 disks (channel 0 positive, 1 negative); encode them "
                                        "with clickmask.client.encoding.encode_clicks")
            prev = request["prev_mask"].reshape(request["prev_mask"].shape[-3:])
            fields["crop_key"].append(key.encode())
            fields["crop"].append(b"" if known else encode_png(image))
            fields["clicks"].append(pack_clicks(request["clicks"]))
            fields["prev_mask"].append(encode_png(prev) if prev.any() else b"")
            fields["flip"].append(b"" if flip is None else encode_flip(*flip))
        sent = sum(len(v) for values in fields.values() for v in values)
        arrays = {name: np.array(values, dtype=np.object_).reshape(-1, 1) for name, values in fields.items()}
        return arrays, sent

    def _compact_tensors(self, module: Any, checked: Sequence[dict[str, np.ndarray]],
                         flips: Sequence[tuple[int, int] | None], attempt: int) -> tuple[list, list, int]:
        """The InferInputs and InferRequestedOutputs (of ``module``: tritonclient.grpc or its aio
        twin) of one compact call, and the bytes it sends; the second attempt carries every crop."""
        arrays, sent = self._compact_request(checked, flips, all_crops=attempt == 1)
        inputs = []
        for name, array in arrays.items():
            tensor = module.InferInput(name, list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs, [module.InferRequestedOutput(COMPACT_OUTPUT)], sent

    def _count_miss(self, miss: "_Miss", attempt: int) -> None:
        """A miss on the first attempt is re-sent with the crops; on the second it is an error."""
        if attempt:
            raise InferenceError(f"the compact entry refused crops it was just sent: {miss}") from miss
        self.crop_resends += 1

    def _settle_compact(self, ready: bool) -> bool:
        """Record whether the server's compact entry is ready; ``wire="compact"`` needs it."""
        if not ready and self.wire == "compact":
            raise ModelNotReadyError(f"{self.url} serves no ready {COMPACT_MODEL} model (wire='compact'); "
                                     "use wire='auto' or 'raw', or serve the embedded repository")
        self._compact = ready
        return ready

    def _forget_crops(self) -> None:
        with self._keys_lock:
            self._sent_keys.clear()

    def _compact_output(self, result: Any, info: ModelInfo, count: int) -> tuple[np.ndarray, int]:
        blobs = result.as_numpy(COMPACT_OUTPUT)
        if blobs is None or blobs.size != count:
            raise InferenceError(f"the compact entry returned {None if blobs is None else blobs.size} masks for "
                                 f"{count} requests")
        planes = [decode_png(bytes(b), 1, info.size, COMPACT_OUTPUT) for b in blobs.reshape(-1)]
        return np.stack(planes), sum(len(b) for b in blobs.reshape(-1))

    def _check_compact_model(self, error: BaseException) -> None:
        """A compact call failed: a server without the compact entry falls back to raw ("auto")."""
        if isinstance(error, ModelNotReadyError) and not error.transient and self.wire == "auto":
            logger.warning("%s offers no usable %s model (%s); sending raw tensors", self.url, COMPACT_MODEL, error)
            self._compact = False
            return
        raise error

    @property
    def metrics(self) -> ClientMetrics | None:
        """The client metrics this client (and its sessions) record into, or None."""
        return self._metrics

    def _translate(self, error: BaseException) -> ClickmaskError:
        if self._metrics is not None:
            self._metrics.observe_grpc_error(self.model_name, _status_name(error))
        return translate_grpc_error(error, model_name=self.model_name, url=self.url)

    def _should_retry(self, error: ClickmaskError, attempt: int, deadline: float) -> float | None:
        """Seconds to wait before retrying, or None to give up.

        Only :class:`ServerUnavailableError` (and its :class:`ServerOverloadedError`) and a
        transient :class:`ModelNotReadyError` (a model between versions while the server
        restarts) are retried. The delay is ``backoff_s * 2**attempt``, shortened by a random fraction of up
        to ``jitter`` so that clients rejected together do not come back together. No retry
        starts when it could not get ``_MIN_ATTEMPT_S`` before ``deadline``.
        """
        transient = isinstance(error, ModelNotReadyError) and error.transient
        if not (isinstance(error, ServerUnavailableError) or transient) or attempt >= self.retries:
            return None
        delay = self.backoff_s * (2**attempt) * (1.0 - self.jitter * self._random.random())
        left = deadline - time.monotonic()
        if delay + _MIN_ATTEMPT_S > left:
            logger.warning("%s; no retry: %.2f s left of the %.1f s deadline", error, max(left, 0.0), self.timeout_s)
            return None
        logger.warning("%s; retry %d/%d in %.2f s", error, attempt + 1, self.retries, delay)
        if self._metrics is not None:
            self._metrics.retries.labels(self.model_name).inc()
        return delay

    def _record(
        self, started: float, error: BaseException | None, batch: dict[str, np.ndarray] | None = None,
        output: np.ndarray | None = None, wire_bytes: tuple[int, int] | None = None,
    ) -> None:
        if self._metrics is None:
            return
        outcome = "ok" if error is None else "error"
        self._metrics.request_seconds.labels(self.model_name, outcome).observe(time.perf_counter() - started)
        if error is not None:
            self._metrics.errors.labels(self.model_name, type(error).__name__).inc()
        elif wire_bytes is not None:
            self._metrics.observe_bytes(self.model_name, sent=wire_bytes[0], received=wire_bytes[1])
        elif batch is not None and output is not None:
            sent = sum(array.nbytes for array in batch.values())
            self._metrics.observe_bytes(self.model_name, sent=sent, received=output.nbytes)

    def _make_request(self, module: Any, info: ModelInfo, batch: dict[str, np.ndarray]):
        inputs = []
        for name, array in batch.items():
            tensor = module.InferInput(name, list(array.shape), info.input_spec(name).datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [module.InferRequestedOutput(info.output_name)]
        return inputs, outputs

    def _read_output(self, result: Any, info: ModelInfo, batch_size: int) -> np.ndarray:
        array = result.as_numpy(info.output_name)
        expected = (batch_size, 1, info.size, info.size)
        if array is None or array.shape != expected:
            shape = None if array is None else array.shape
            raise InferenceError(f"server returned {info.output_name} of shape {shape}, expected {expected}")
        if array.dtype != np.uint8:
            raise InferenceError(f"server returned {info.output_name} as {array.dtype}, expected uint8")
        return array

    def _stack(self, info: ModelInfo, requests: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if len(requests) == 0:
            raise InvalidInputError("infer_batch needs at least one request")
        if info.max_batch_size and len(requests) > info.max_batch_size:
            raise InvalidInputError(
                f"{len(requests)} requests exceed the model's max_batch_size {info.max_batch_size}; split them"
            )
        checked = [check_inputs(r, info) for r in requests]
        if len(checked) == 1:  # already contiguous [1, C, S, S]: no copy
            return checked[0]
        return {name: np.concatenate([c[name] for c in checked]) for name in CONTRACT_INPUTS}

    def _raw_payload(self, info: ModelInfo, batch: dict[str, np.ndarray]) -> bytes:
        """The raw request as bytes (``raw_request``): one copy of the tensors instead of four."""
        return encode_infer_request(self.model_name, [(name, info.input_spec(name).datatype, batch[name])
                                                      for name in CONTRACT_INPUTS], [info.output_name])

    def _raw_method(self, channel: Any) -> Any:
        """ModelInfer on tritonclient's own channel, taking the request as bytes; None where that
        client keeps no ``_channel`` (then tritonclient builds the request itself)."""
        if self._raw_infer is None:
            from tritonclient.grpc import service_pb2  # noqa: PLC0415

            self._raw_infer = False if channel is None else channel.unary_unary(
                MODEL_INFER_METHOD, request_serializer=None,
                response_deserializer=service_pb2.ModelInferResponse.FromString)
        return self._raw_infer or None

    def _raw_call_kwargs(self) -> dict[str, Any]:
        from tritonclient.grpc._utils import _grpc_compression_type  # noqa: PLC0415

        headers = self._kwargs.get("headers") or {}
        return {"metadata": tuple(headers.items()),
                "compression": _grpc_compression_type(self._infer_kwargs.get("compression_algorithm"))}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, model_name={self.model_name!r})"


class Client(_ClientBase):
    """Synchronous gRPC client; also a :class:`~clickmask.client.session.Predictor`.

    Args:
        url: ``host:port`` of Triton's gRPC endpoint.
        model_name: the model to call.
        timeout_s: deadline of each call in seconds, retries and backoff included.
        retries: how many times to retry a call the server was UNAVAILABLE for (down,
            restarting, queue full, backend process crashed), within the deadline.
        backoff_s: first retry delay; it doubles each retry.
        jitter: each delay is shortened by a random fraction of up to ``jitter`` (0 to 1).
        metrics: record Prometheus client metrics there (none if None).
        ssl: gRPC over TLS; ``root_certificates`` (PEM file) verifies a private CA or a
            self-signed server certificate, ``private_key``/``certificate_chain`` (PEM files)
            authenticate the client when the server asks for mutual TLS.
        headers: sent with every call, e.g. the admin key of a locked-down server.
        compression: compress inference requests on the wire with ``"gzip"`` or
            ``"deflate"`` (None: uncompressed). The click maps and the previous mask are
            mostly zeros: a request shrinks from 615 KB to 235 KB on the wire at S=320
            (benchmarks/results/wire_compression.md), for some 25 ms of CPU per click on a slow
            core, so it pays on networks slower than about 100 Mbit/s. Responses are
            compressed when the server runs with
            ``--grpc-infer-response-compression-level`` (``clickmask serve
            --grpc-response-compression``).
        wire: ``"auto"`` (default, or ``$CLICKMASK_WIRE``) sends clicks through the server's
            compact entry ``clickmask_compact`` when it offers one and is not on this machine:
            image crops once and then by content key, clicks bit-packed, masks as PNG, the flip
            pass's mirror made on the server; the masks are bit-identical to the raw path's.
            Over loopback the bytes cost nothing and the codec costs CPU, so ``"auto"`` sends
            raw tensors there: through shared memory when the client holds the server's admin
            key (``headers`` or ``$CLICKMASK_ADMIN_KEY``; the request then carries offsets, not
            717 KB), else in the gRPC message. ``"shm"`` requires shared memory (the key, and the
            server on this machine); ``"raw"`` always sends the contract's tensors in the
            message; ``"compact"`` takes the compact entry (loopback too) and fails when the
            server has none.

    The model info (S, tensor names) is fetched on first use and cached; a thread may share
    one client.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model_name: str = DEFAULT_MODEL_NAME,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        *,
        metrics: ClientMetrics | None = None,
        jitter: float = 0.5,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        headers: Mapping[str, str] | None = None,
        compression: str | None = None,
        wire: str | None = None,
    ) -> None:
        super().__init__(url, model_name, timeout_s, retries, backoff_s, metrics, jitter, headers, compression, wire)
        self._info_lock = threading.Lock()
        self._triton = grpcclient.InferenceServerClient(url=url, **_tls_kwargs(
            ssl, root_certificates, private_key, certificate_chain))

    def _call(self, fn: Callable[[float], T]) -> T:
        """Run ``fn(attempt_timeout_s)``, retrying as :meth:`_should_retry` allows."""
        deadline = time.monotonic() + self.timeout_s
        timeout, attempt = self.timeout_s, 0
        while True:
            try:
                return fn(timeout)
            except _GRPC_ERRORS as error:
                translated = self._translate(error)
                delay = self._should_retry(translated, attempt, deadline)
                if delay is None:
                    raise translated from error
            time.sleep(delay)
            attempt += 1
            timeout = max(deadline - time.monotonic(), _MIN_ATTEMPT_S)

    @property
    def model_info(self) -> ModelInfo:
        """What the server says about the model (fetched once, then cached)."""
        with self._info_lock:
            if self._info is None:
                metadata = self._call(
                    lambda t: self._triton.get_model_metadata(self.model_name, client_timeout=t, **self._kwargs)
                )
                try:
                    config = self._call(
                        lambda t: self._triton.get_model_config(self.model_name, client_timeout=t, **self._kwargs)
                    )
                except PermissionDeniedError:  # a locked-down server: the metadata says enough
                    logger.info("model config is restricted at %s; reading S from the model metadata", self.url)
                    config = None
                self._info = parse_model_info(metadata, config)
                logger.info("connected to %s: %s", self.url, self._info)
            return self._info

    @property
    def size(self) -> int:
        """The network input size S advertised by the server."""
        return self.model_info.size

    def is_ready(self) -> bool:
        """True when the server is reachable and the model is ready (never raises for that)."""
        try:
            return bool(self._triton.is_model_ready(self.model_name, client_timeout=self.timeout_s, **self._kwargs))
        except _GRPC_ERRORS:
            return False

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run the model on one request.

        Args:
            inputs: ``{"image": uint8 [3,S,S], "clicks": uint8 [2,S,S], "prev_mask": uint8
                [1,S,S]}`` (a leading batch dim of 1 is accepted too).

        Returns:
            ``mask_prob``, uint8 [1, S, S].
        """
        return self.infer_batch([inputs])[0]

    def _use_compact(self) -> bool:
        if self._compact is None:
            try:
                ready = bool(self._triton.is_model_ready(COMPACT_MODEL, client_timeout=self.timeout_s, **self._kwargs))
            except _GRPC_ERRORS:
                ready = False
            self._settle_compact(ready)
        return self._compact

    def _register(self, region: Region) -> None:
        try:
            self._triton.register_system_shared_memory(region.name, region.key, region.nbytes,
                                                       headers=self._admin, client_timeout=self.timeout_s)
        except _GRPC_ERRORS as error:
            raise _ShmRefused(getattr(error, "message", lambda: str(error))()) from error
        region.registered = True

    def _unregister(self, regions: Sequence[Region]) -> None:
        for region in regions:
            try:
                self._triton.unregister_system_shared_memory(region.name, headers=self._admin,
                                                             client_timeout=self.timeout_s)
            except _GRPC_ERRORS as error:  # a server that is gone has forgotten it anyway
                logger.debug("could not unregister %s: %s", region.name, error)

    def _infer_shm(self, info: ModelInfo, batch: dict[str, np.ndarray]) -> np.ndarray:
        """One raw request through a shared-memory region; a region the server lost (a restart)
        is registered again once."""
        count = int(batch["image"].shape[0])
        region = self._take_region(info, count)
        try:
            for attempt in (0, 1):
                if not region.registered:
                    self._register(region)
                inputs, outputs = shm_request(grpcclient, region, info, batch)
                try:
                    self._call(lambda t: self._triton.infer(self.model_name, inputs, outputs=outputs,
                                                            client_timeout=t, **self._infer_kwargs))
                except ClickmaskError as error:
                    if attempt or not is_missing_region(str(error)):
                        raise
                    logger.info("%s lost the shared-memory regions (restarted?); registering again", self.url)
                    self._shm_pool.forget_registrations()
                    continue
                return region.read_output(count)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._unregister(self._shm_pool.give(region))

    def _compact_call(self, inputs: list, outputs: list, timeout: float) -> Any:
        try:
            return self._triton.infer(COMPACT_MODEL, inputs, outputs=outputs, client_timeout=timeout,
                                      **self._infer_kwargs)
        except InferenceServerException as error:
            if MISS_PREFIX in str(error.message()):
                raise _Miss(str(error.message())) from error
            raise

    def _infer_compact(self, info: ModelInfo, requests: Sequence[dict[str, np.ndarray]],
                       flips: Sequence[tuple[int, int] | None]) -> np.ndarray:
        if len(requests) == 0:
            raise InvalidInputError("infer_batch needs at least one request")
        checked = [check_inputs(r, info) for r in requests]
        started = time.perf_counter()
        for attempt in (0, 1):
            inputs, outputs, sent = self._compact_tensors(grpcclient, checked, flips, attempt)
            try:
                result = self._call(lambda t: self._compact_call(inputs, outputs, t))
                array, received = self._compact_output(result, info, len(checked))
            except _Miss as miss:
                self._count_miss(miss, attempt)
                continue
            except ClickmaskError as error:
                self._record(started, error)
                raise
            self._record(started, None, wire_bytes=(sent, received))
            return array[:, None]
        raise AssertionError("unreachable")  # pragma: no cover

    def infer_flip(self, inputs: dict[str, np.ndarray], rows: int, cols: int) -> np.ndarray:
        """The flip pass of one request: its answer and its mirror's (content region ``rows`` x
        ``cols``) averaged, uint8 [S, S]. The compact entry mirrors on the server (one request);
        the raw path sends both as one batch."""
        info = self.model_info
        if self._use_compact():
            try:
                return self._infer_compact(info, [inputs], [(rows, cols)])[0, 0]
            except ModelNotReadyError as error:
                self._check_compact_model(error)
        pair = [inputs, {name: mirror(np.asarray(array), rows, cols) for name, array in inputs.items()}]
        output = self.infer_batch(pair)
        return merge_flip(output[0, 0], output[1, 0], rows, cols)

    def infer_batch(self, requests: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
        """Run several requests as one batch (at most the model's ``max_batch_size``).

        Returns:
            uint8 [N, 1, S, S], one ``mask_prob`` per request, in order.
        """
        info = self.model_info
        if self._use_compact() and 0 < len(requests) <= _COMPACT_BATCH:
            try:
                return self._infer_compact(info, requests, [None] * len(requests))
            except ModelNotReadyError as error:
                self._check_compact_model(error)
        batch = self._stack(info, requests)
        started = time.perf_counter()
        if self._shm_on:
            try:
                array = self._infer_shm(info, batch)
            except _ShmRefused as refused:
                self._shm_refused(refused)
            except ClickmaskError as error:
                self._record(started, error)
                raise
            else:
                self._record(started, None, wire_bytes=(0, 0))
                return array
        method = self._raw_method(getattr(self._triton, "_channel", None))
        try:
            if method is not None:
                payload, kwargs = self._raw_payload(info, batch), self._raw_call_kwargs()
                result = grpcclient.InferResult(self._call(lambda t: method(payload, timeout=t, **kwargs)))
            else:
                inputs, outputs = self._make_request(grpcclient, info, batch)
                result = self._call(
                    lambda t: self._triton.infer(self.model_name, inputs, outputs=outputs, client_timeout=t,
                                                **self._infer_kwargs)
                )
            array = self._read_output(result, info, len(requests))
        except ClickmaskError as error:
            self._record(started, error)
            raise
        self._record(started, None, batch, array)
        return array

    def session(self, image: np.ndarray, **options: Any) -> Session:
        """Start a :class:`~clickmask.client.session.Session` on ``image`` (HxWx3 uint8 RGB).

        ``options`` go to the session (``zoom_in``, ``expansion_ratio``, ``min_crop_size``,
        ``initial_mask``: start from an existing HxW mask and refine it with clicks).
        """
        return Session(self, image, **options)

    def close(self) -> None:
        """Unregister and remove the shared-memory regions, close the gRPC channel; the client
        cannot be used afterwards."""
        if self._shm_pool is not None:
            self._unregister(self._shm_pool.close())
        self._triton.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """asyncio twin of :class:`Client` over ``tritonclient.grpc.aio``.

    ``infer``, ``infer_batch``, ``get_model_info``, ``session`` and ``close`` are
    coroutines; ``size`` is available once the model info was fetched (any of them does
    that). Use it as ``async with AsyncClient(url) as client: ...``.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model_name: str = DEFAULT_MODEL_NAME,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        *,
        metrics: ClientMetrics | None = None,
        jitter: float = 0.5,
        ssl: bool = False,
        root_certificates: str | None = None,
        private_key: str | None = None,
        certificate_chain: str | None = None,
        headers: Mapping[str, str] | None = None,
        compression: str | None = None,
        wire: str | None = None,
    ) -> None:
        super().__init__(url, model_name, timeout_s, retries, backoff_s, metrics, jitter, headers, compression, wire)
        import tritonclient.grpc.aio as aio_grpcclient  # grpc.aio only when asked for

        self._aio = aio_grpcclient
        self._triton = aio_grpcclient.InferenceServerClient(url=url, **_tls_kwargs(
            ssl, root_certificates, private_key, certificate_chain))
        self._info_lock: asyncio.Lock | None = None

    async def _call(self, fn: Callable[[float], Any]) -> Any:
        """Await ``fn(attempt_timeout_s)``, retrying as :meth:`_should_retry` allows."""
        deadline = time.monotonic() + self.timeout_s
        timeout, attempt = self.timeout_s, 0
        while True:
            try:
                return await fn(timeout)
            except _GRPC_ERRORS as error:
                translated = self._translate(error)
                delay = self._should_retry(translated, attempt, deadline)
                if delay is None:
                    raise translated from error
            await asyncio.sleep(delay)
            attempt += 1
            timeout = max(deadline - time.monotonic(), _MIN_ATTEMPT_S)

    async def get_model_info(self) -> ModelInfo:
        """What the server says about the model (fetched once, then cached)."""
        if self._info_lock is None:
            self._info_lock = asyncio.Lock()
        async with self._info_lock:
            if self._info is None:
                metadata = await self._call(
                    lambda t: self._triton.get_model_metadata(self.model_name, client_timeout=t, **self._kwargs)
                )
                try:
                    config = await self._call(
                        lambda t: self._triton.get_model_config(self.model_name, client_timeout=t, **self._kwargs)
                    )
                except PermissionDeniedError:  # a locked-down server: the metadata says enough
                    logger.info("model config is restricted at %s; reading S from the model metadata", self.url)
                    config = None
                self._info = parse_model_info(metadata, config)
                logger.info("connected to %s: %s", self.url, self._info)
            return self._info

    @property
    def size(self) -> int:
        """S; raises ClickmaskError until the model info was fetched (``await get_model_info()``)."""
        if self._info is None:
            raise ClickmaskError("model info not fetched yet: await client.get_model_info() first")
        return self._info.size

    async def is_ready(self) -> bool:
        """True when the server is reachable and the model is ready."""
        try:
            return bool(
                await self._triton.is_model_ready(self.model_name, client_timeout=self.timeout_s, **self._kwargs)
            )
        except _GRPC_ERRORS:
            return False

    async def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run the model on one request; see :meth:`Client.infer`. Returns uint8 [1, S, S]."""
        return (await self.infer_batch([inputs]))[0]

    async def _use_compact(self) -> bool:
        if self._compact is None:
            try:
                ready = bool(await self._triton.is_model_ready(COMPACT_MODEL, client_timeout=self.timeout_s,
                                                               **self._kwargs))
            except _GRPC_ERRORS:
                ready = False
            self._settle_compact(ready)
        return self._compact

    async def _register(self, region: Region) -> None:
        try:
            await self._triton.register_system_shared_memory(region.name, region.key, region.nbytes,
                                                             headers=self._admin, client_timeout=self.timeout_s)
        except _GRPC_ERRORS as error:
            raise _ShmRefused(getattr(error, "message", lambda: str(error))()) from error
        region.registered = True

    async def _unregister(self, regions: Sequence[Region]) -> None:
        for region in regions:
            try:
                await self._triton.unregister_system_shared_memory(region.name, headers=self._admin,
                                                                   client_timeout=self.timeout_s)
            except _GRPC_ERRORS as error:
                logger.debug("could not unregister %s: %s", region.name, error)

    async def _infer_shm(self, info: ModelInfo, batch: dict[str, np.ndarray]) -> np.ndarray:
        """See :meth:`Client._infer_shm`."""
        count = int(batch["image"].shape[0])
        region = self._take_region(info, count)
        try:
            for attempt in (0, 1):
                if not region.registered:
                    await self._register(region)
                inputs, outputs = shm_request(self._aio, region, info, batch)
                try:
                    await self._call(lambda t: self._triton.infer(self.model_name, inputs, outputs=outputs,
                                                                  client_timeout=t, **self._infer_kwargs))
                except ClickmaskError as error:
                    if attempt or not is_missing_region(str(error)):
                        raise
                    logger.info("%s lost the shared-memory regions (restarted?); registering again", self.url)
                    self._shm_pool.forget_registrations()
                    continue
                return region.read_output(count)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            await self._unregister(self._shm_pool.give(region))

    async def _compact_call(self, inputs: list, outputs: list, timeout: float) -> Any:
        try:
            return await self._triton.infer(COMPACT_MODEL, inputs, outputs=outputs, client_timeout=timeout,
                                            **self._infer_kwargs)
        except InferenceServerException as error:
            if MISS_PREFIX in str(error.message()):
                raise _Miss(str(error.message())) from error
            raise

    async def _infer_compact(self, info: ModelInfo, requests: Sequence[dict[str, np.ndarray]],
                             flips: Sequence[tuple[int, int] | None]) -> np.ndarray:
        if len(requests) == 0:
            raise InvalidInputError("infer_batch needs at least one request")
        checked = [check_inputs(r, info) for r in requests]
        started = time.perf_counter()
        for attempt in (0, 1):
            inputs, outputs, sent = self._compact_tensors(self._aio, checked, flips, attempt)
            try:
                result = await self._call(lambda t: self._compact_call(inputs, outputs, t))
                array, received = self._compact_output(result, info, len(checked))
            except _Miss as miss:
                self._count_miss(miss, attempt)
                continue
            except ClickmaskError as error:
                self._record(started, error)
                raise
            self._record(started, None, wire_bytes=(sent, received))
            return array[:, None]
        raise AssertionError("unreachable")  # pragma: no cover

    async def infer_flip(self, inputs: dict[str, np.ndarray], rows: int, cols: int) -> np.ndarray:
        """The flip pass of one request; see :meth:`Client.infer_flip`."""
        info = await self.get_model_info()
        if await self._use_compact():
            try:
                return (await self._infer_compact(info, [inputs], [(rows, cols)]))[0, 0]
            except ModelNotReadyError as error:
                self._check_compact_model(error)
        pair = [inputs, {name: mirror(np.asarray(array), rows, cols) for name, array in inputs.items()}]
        output = await self.infer_batch(pair)
        return merge_flip(output[0, 0], output[1, 0], rows, cols)

    async def infer_batch(self, requests: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
        """Run several requests as one batch; see :meth:`Client.infer_batch`."""
        info = await self.get_model_info()
        if await self._use_compact() and 0 < len(requests) <= _COMPACT_BATCH:
            try:
                return await self._infer_compact(info, requests, [None] * len(requests))
            except ModelNotReadyError as error:
                self._check_compact_model(error)
        batch = self._stack(info, requests)
        started = time.perf_counter()
        if self._shm_on:
            try:
                array = await self._infer_shm(info, batch)
            except _ShmRefused as refused:
                self._shm_refused(refused)
            except ClickmaskError as error:
                self._record(started, error)
                raise
            else:
                self._record(started, None, wire_bytes=(0, 0))
                return array
        method = self._raw_method(getattr(self._triton, "_channel", None))
        try:
            if method is not None:
                payload, kwargs = self._raw_payload(info, batch), self._raw_call_kwargs()
                result = self._aio.InferResult(await self._call(lambda t: method(payload, timeout=t, **kwargs)))
            else:
                inputs, outputs = self._make_request(self._aio, info, batch)
                result = await self._call(
                    lambda t: self._triton.infer(self.model_name, inputs, outputs=outputs, client_timeout=t,
                                                **self._infer_kwargs)
                )
            array = self._read_output(result, info, len(requests))
        except ClickmaskError as error:
            self._record(started, error)
            raise
        self._record(started, None, batch, array)
        return array

    async def session(self, image: np.ndarray, **options: Any) -> AsyncSession:
        """Start an :class:`~clickmask.client.session.AsyncSession` on ``image`` (options as
        :meth:`Client.session`)."""
        check_rgb_image(image)  # fail before any network call
        seed = _initial_state(options.pop("initial_mask", None), image.shape[:2])
        await self.get_model_info()
        return AsyncSession(self, image, _seed=seed, **options)

    async def close(self) -> None:
        """Unregister and remove the shared-memory regions, close the gRPC channel."""
        if self._shm_pool is not None:
            await self._unregister(self._shm_pool.close())
        await self._triton.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()



def _tls_kwargs(ssl: bool, root_certificates: str | None, private_key: str | None,
                certificate_chain: str | None) -> dict[str, Any]:
    """tritonclient's TLS arguments; empty without ``ssl`` (the files must then not be given)."""
    files = {"root_certificates": root_certificates, "private_key": private_key,
             "certificate_chain": certificate_chain}
    if not ssl:
        given = [name for name, value in files.items() if value is not None]
        if given:
            raise InvalidInputError(f"{', '.join(given)} only apply with ssl=True")
        return {}
    for name, value in files.items():
        if value is not None:
            try:
                with open(value, "rb"):
                    pass
            except OSError as error:
                raise InvalidInputError(f"{name}={value!r} cannot be read: {error.strerror}; give a PEM file") from None
    return {"ssl": True, **files}
