"""Options of the GPU predictor (:class:`clickmask.serving.cuda.CudaPredictor`), torch-free.

The config generator (``clickmask.export.model_config``) writes them as ``config.pbtxt``
parameters and the adapter reads them back with :meth:`CudaOptions.from_parameters`; neither
needs torch for that.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

PRECISIONS = ("fp16", "fp32")
#: Batch buckets: every batch is padded to one of these. A batch of one is padded to two: a
#: compiled module specialises a dimension of size 1, and the pad costs next to nothing on a GPU.
DEFAULT_BUCKETS = (2, 4, 8, 16, 32, 64, 128)
MAX_BUCKET = 1024
#: Config parameters (``config.pbtxt``) that :meth:`CudaOptions.from_parameters` reads.
PARAMETER_KEYS = ("device", "precision", "channels_last", "compile", "cuda_graphs", "batch_buckets", "streams")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class CudaPredictorError(ValueError):
    """Options that cannot run as asked; the message says which and how to fix it."""


def _flag(params: Mapping[str, str], key: str, default: bool) -> bool:
    value = str(params.get(key, default)).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise CudaPredictorError(f"parameter '{key}' must be true or false, got {params[key]!r}")


@dataclasses.dataclass(frozen=True)
class CudaOptions:
    """How the network runs. The defaults are the served GPU path; ``device="cpu"`` with
    ``cuda_graphs=False`` runs the same code on a CPU."""

    device: str = "cuda"
    precision: str = "fp16"
    channels_last: bool = True
    compile: bool = True
    cuda_graphs: bool = True
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    streams: int = 2
    compile_backend: str = "inductor"  # "eager" traces with dynamo but generates no kernels (tests)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise CudaPredictorError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        buckets = tuple(int(b) for b in self.buckets)
        if not buckets or list(buckets) != sorted(set(buckets)) or not 1 <= buckets[0] <= buckets[-1] <= MAX_BUCKET:
            raise CudaPredictorError(f"batch buckets must be increasing sizes in 1..{MAX_BUCKET}, got {list(buckets)}")
        if self.compile and buckets[0] < 2:
            raise CudaPredictorError("with compile the smallest batch bucket is 2 (a compiled module specialises a "
                                     "batch of 1; a single request is padded to 2): drop 1 from the buckets")
        object.__setattr__(self, "buckets", buckets)
        if self.streams < 1:
            raise CudaPredictorError(f"streams must be at least 1, got {self.streams}")
        if self.cuda_graphs and not self.device.startswith("cuda"):
            raise CudaPredictorError(f"CUDA graphs need a CUDA device, got device {self.device!r}: "
                                     "set cuda_graphs false to run on the CPU")

    @property
    def max_batch(self) -> int:
        return self.buckets[-1]

    def bucket(self, batch: int) -> int:
        """The smallest bucket that holds ``batch`` (``batch`` <= the largest bucket)."""
        return next(b for b in self.buckets if b >= batch)

    def as_parameters(self) -> dict[str, str]:
        """The config.pbtxt parameters that select these options (inverse of :meth:`from_parameters`)."""
        return {"device": self.device, "precision": self.precision,
                "channels_last": str(self.channels_last).lower(), "compile": str(self.compile).lower(),
                "cuda_graphs": str(self.cuda_graphs).lower(), "batch_buckets": ",".join(map(str, self.buckets)),
                "streams": str(self.streams)}

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], device: str | None = None) -> "CudaOptions":
        """Options from the string parameters of a model config; ``device`` (Triton's instance
        device, ``cuda:N``) applies unless the config names one."""
        default = cls()
        try:
            buckets = tuple(int(b) for b in str(params.get("batch_buckets", "")).split(",") if b.strip()) \
                or default.buckets
            streams = int(params.get("streams", default.streams))
        except ValueError as exc:
            raise CudaPredictorError(f"batch_buckets must be comma-separated integers and streams an integer: "
                                     f"{exc}") from None
        return cls(device=str(params.get("device") or device or default.device),
                   precision=str(params.get("precision", default.precision)),
                   channels_last=_flag(params, "channels_last", default.channels_last),
                   compile=_flag(params, "compile", default.compile),
                   cuda_graphs=_flag(params, "cuda_graphs", default.cuda_graphs),
                   buckets=buckets, streams=streams)
