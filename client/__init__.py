"""clickmask client library: encoding, zoom-in, clicker, sessions, gRPC clients, masks.

``import clickmask.client`` never imports torch. The gRPC clients (and with them
tritonclient and grpc) are imported on first access of ``Client``, ``AsyncClient`` or
``ModelInfo``, so the encoding, the clicker and :class:`Mask` stay light for training and
evaluation code.

Example::

    from clickmask.client import Client
    client = Client("127.0.0.1:8001")
    session = client.session(image)                 # HxWx3 uint8 RGB
    mask = session.click(x=120, y=80)               # positive click
    mask = session.click(x=200, y=40, positive=False)
    mask.array                                      # HxW bool, full resolution
    session.undo()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clicker import iou, load_gt, next_click
from .clicks import Click
from .encoding import (
    DEFAULT_SIZE,
    DISK_RADIUS,
    CropTransform,
    decode_prob,
    encode_clicks,
    encode_image,
    encode_inputs,
    encode_prev_mask,
)
from .errors import (
    ClickmaskError,
    DeadlineExceededError,
    InferenceError,
    InvalidInputError,
    ModelNotReadyError,
    PermissionDeniedError,
    ServerOverloadedError,
    ServerUnavailableError,
)
from .mask import Mask
from .session import AsyncPredictor, AsyncSession, ClickRecord, Predictor, Session
from .zoom_in import zoom_in_box

if TYPE_CHECKING:
    from .grpc_client import AsyncClient, Client, ModelInfo

_LAZY = {"Client", "AsyncClient", "ModelInfo"}

__all__ = [
    "Client",
    "AsyncClient",
    "ModelInfo",
    "Session",
    "AsyncSession",
    "ClickRecord",
    "Predictor",
    "AsyncPredictor",
    "Mask",
    "Click",
    "CropTransform",
    "DEFAULT_SIZE",
    "DISK_RADIUS",
    "encode_image",
    "encode_clicks",
    "encode_prev_mask",
    "encode_inputs",
    "decode_prob",
    "zoom_in_box",
    "next_click",
    "iou",
    "load_gt",
    "ClickmaskError",
    "InvalidInputError",
    "ServerUnavailableError",
    "ServerOverloadedError",
    "PermissionDeniedError",
    "DeadlineExceededError",
    "ModelNotReadyError",
    "InferenceError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import grpc_client

        return getattr(grpc_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
