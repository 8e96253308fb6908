"""HRNet-W with an OCR head, laid out like RITM's ``HighResolutionNet``.

Written for clickmask in plain torch from the published architecture (HRNet, Wang et al. 2019;
OCR, Yuan et al. 2020; RITM, Sofiiuk et al. 2021). Module names and the order of the children
follow RITM's ``isegm/model/modeling/hrnet_ocr.py`` so that the ``feature_extractor.*`` part of
an official RITM checkpoint loads with ``strict=True``; the ``nn.Identity`` placeholders stand
where RITM keeps ``None`` (neither has parameters, so the state-dict keys are the same).

Shapes, for an input ``[B, 3, H, W]`` with H and W multiples of 32::

    stem            -> [B, 64, H/4, W/4]       (two stride-2 3x3 convs; click features join after the first)
    layer1          -> [B, 256, H/4, W/4]      (Bottleneck blocks)
    stage2..stage4  -> branches at H/4, H/8, H/16, H/32 with width, 2w, 4w, 8w channels
    aggregate       -> [B, 15 * width, H/4, W/4]
    OCR head        -> (logits, aux logits), each [B, num_classes, H/4, W/4]
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

STEM_CHANNELS = 64
LAYER1_PLANES = 64


def _ints(values: Sequence[int]) -> tuple[int, ...]:
    """Sizes as Python ints. Under ONNX tracing they become constants on purpose: S is fixed
    per deployment (only the batch axis is dynamic), and constants keep the graph static."""
    if not torch.jit.is_tracing():
        return tuple(int(v) for v in values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return tuple(int(v) for v in values)


def _flatten_hw(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H*W] with a constant target shape (batch left as -1)."""
    c, h, w = _ints(x.shape[1:])
    return x.reshape(-1, c, h * w)


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of ``x`` to ``size`` (rows, cols), ``align_corners=True`` as RITM.

    With ``align_corners=True`` the sampling grid depends only on the input and output sizes,
    so when ``size`` is an integer multiple of ``x``'s size a constant ``scale_factor`` gives the
    same values; it also keeps the exported ONNX graph static (no Shape arithmetic), which is
    the case at every multiple-of-32 input size. Other sizes fall back to ``size=``.
    """
    h, w = _ints(size)
    hx, wx = _ints(x.shape[-2:])
    if h % hx == 0 and w % wx == 0 and h // hx == w // wx:
        if h == hx:
            return x
        return F.interpolate(x, scale_factor=float(h // hx), mode="bilinear", align_corners=True)
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return upsample_to(x, like.shape[-2:])


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual (ResNet V1b basic block; parameter names as RITM's)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4) with a residual (ResNet V1b bottleneck; names as RITM's)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


def _make_blocks(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, num_blocks: int) -> nn.Sequential:
    """``num_blocks`` blocks at stride 1; the first gets a 1x1 projection if channels change."""
    out_channels = planes * block.expansion
    downsample = None
    if inplanes != out_channels:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
    layers = [block(inplanes, planes, downsample=downsample)]
    layers += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every branch receives the sum of all branches.

    ``fuse_layers[i][j]`` brings branch ``j`` to branch ``i``: a 1x1 conv + BN and a bilinear
    upsample when ``j > i``; a chain of stride-2 3x3 convs when ``j < i``; identity for ``i == j``.
    """

    def __init__(self, channels: Sequence[int], num_blocks: int):
        super().__init__()
        self.num_branches = len(channels)
        self.branches = nn.ModuleList(_make_blocks(BasicBlock, c, c, num_blocks) for c in channels)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(self._fuse_layer(channels, j, i) for j in range(self.num_branches))
            for i in range(self.num_branches))
        self.relu = nn.ReLU(inplace=True)

    @staticmethod
    def _fuse_layer(channels: Sequence[int], src: int, dst: int) -> nn.Module:
        if src == dst:
            return nn.Identity()
        if src > dst:
            return _conv_bn(channels[src], channels[dst], 1, relu=False)
        steps = []
        for k in range(dst - src):
            last = k == dst - src - 1
            steps.append(_conv_bn(channels[src], channels[dst] if last else channels[src], 3, stride=2,
                                  relu=not last))
        return nn.Sequential(*steps)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, fuse in enumerate(self.fuse_layers):
            y = fuse[0](xs[0])  # summed in branch order, as RITM does
            for j in range(1, self.num_branches):
                if j > i:
                    y = y + _upsample_to(fuse[j](xs[j]), xs[i])
                else:
                    y = y + fuse[j](xs[j])
            out.append(self.relu(y))
        return out


class SpatialGather(nn.Module):
    """OCR step 1: one context vector per class, the feature average weighted by softmax(logits) over pixels."""

    def forward(self, feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(_flatten_hw(logits), dim=2)              # [B, K, HW]
        context = torch.matmul(probs, _flatten_hw(feats).transpose(1, 2))  # [B, K, C]
        return context.transpose(1, 2).unsqueeze(3)                # [B, C, K, 1]


def _conv_bn_relu_nested(in_channels: int, out_channels: int) -> list[nn.Module]:
    # RITM nests BN + ReLU in their own Sequential, which shows in the parameter names (``f_up.1.0``).
    return [nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))]


class ObjectAttentionBlock(nn.Module):
    """OCR step 2: each pixel attends over the class context vectors (scale 1: no pooling)."""

    def __init__(self, in_channels: int, key_channels: int):
        super().__init__()
        self.key_channels = key_channels
        self.f_pixel = nn.Sequential(*_conv_bn_relu_nested(in_channels, key_channels),
                                     *_conv_bn_relu_nested(key_channels, key_channels))
        self.f_object = nn.Sequential(*_conv_bn_relu_nested(in_channels, key_channels),
                                      *_conv_bn_relu_nested(key_channels, key_channels))
        self.f_down = nn.Sequential(*_conv_bn_relu_nested(in_channels, key_channels))
        self.f_up = nn.Sequential(*_conv_bn_relu_nested(key_channels, in_channels))

    def forward(self, x: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
        query = _flatten_hw(self.f_pixel(x)).transpose(1, 2)      # [B, HW, Ck]
        key = _flatten_hw(self.f_object(proxy))                    # [B, Ck, K]
        value = _flatten_hw(self.f_down(proxy)).transpose(1, 2)    # [B, K, Ck]
        sim = F.softmax((self.key_channels ** -0.5) * torch.matmul(query, key), dim=-1)  # [B, HW, K]
        context = torch.matmul(sim, value).transpose(1, 2)         # [B, Ck, HW]
        h, w = _ints(x.shape[-2:])
        context = context.reshape(-1, self.key_channels, h, w)
        return self.f_up(context)


class SpatialOCR(nn.Module):
    """OCR step 3: concatenate the object context with the pixel features and mix them (1x1)."""

    def __init__(self, in_channels: int, key_channels: int, out_channels: int, dropout: float = 0.05):
        super().__init__()
        self.object_context_block = ObjectAttentionBlock(in_channels, key_channels)
        self.conv_bn_dropout = nn.Sequential(*_conv_bn_relu_nested(2 * in_channels, out_channels),
                                             nn.Dropout2d(dropout))

    def forward(self, feats: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.conv_bn_dropout(torch.cat([self.object_context_block(feats, context), feats], 1))


class HighResolutionNet(nn.Module):
    """HRNet-W``width`` + OCR head (``ocr_width`` key channels, 2x that mid channels).

    ``small=True`` is RITM's HRNet18s: 2 blocks per branch (else 4) and 1/3/2 modules in stages
    2/3/4 (else 1/4/3). ``forward(x, additional_features)`` returns ``(logits, aux_logits)`` at
    stride 4; ``additional_features`` ([B, 64, H/2, W/2]) are added after ``conv1/bn1/relu``.
    """

    def __init__(self, width: int, ocr_width: int, small: bool = False, num_classes: int = 1):
        super().__init__()
        if ocr_width <= 0:
            raise ValueError("only the OCR head is implemented: ocr_width must be positive")
        self.width, self.ocr_width, self.small = width, ocr_width, small
        num_blocks = 2 if small else 4
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_blocks(Bottleneck, STEM_CHANNELS, LAYER1_PLANES, num_blocks)

        channels = [LAYER1_PLANES * Bottleneck.expansion]
        for index, num_modules in enumerate((1, 3, 2) if small else (1, 4, 3), start=1):
            new_channels = [width * 2 ** b for b in range(index + 1)]
            setattr(self, f"transition{index}", self._transition(channels, new_channels))
            setattr(self, f"stage{index + 1}", nn.Sequential(
                *(HighResolutionModule(new_channels, num_blocks) for _ in range(num_modules))))
            channels = new_channels

        last_channels = sum(channels)
        mid_channels = 2 * ocr_width
        self.conv3x3_ocr = nn.Sequential(nn.Conv2d(last_channels, mid_channels, 3, padding=1),
                                         nn.BatchNorm2d(mid_channels), nn.ReLU(inplace=True))
        self.ocr_gather_head = SpatialGather()
        self.ocr_distri_head = SpatialOCR(mid_channels, ocr_width, mid_channels)
        self.cls_head = nn.Conv2d(mid_channels, num_classes, 1)
        self.aux_head = nn.Sequential(nn.Conv2d(last_channels, last_channels, 1), nn.BatchNorm2d(last_channels),
                                      nn.ReLU(inplace=True), nn.Conv2d(last_channels, num_classes, 1))

    @staticmethod
    def _transition(prev: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
        """Adapt the existing branches (3x3 conv where channels change) and grow the new ones."""
        layers: list[nn.Module] = []
        for i, c in enumerate(cur):
            if i < len(prev):
                layers.append(_conv_bn(prev[i], c, 3) if prev[i] != c else nn.Identity())
            else:  # a new, coarser branch grown from the coarsest existing one
                steps = i + 1 - len(prev)
                layers.append(nn.Sequential(*(
                    _conv_bn(prev[-1], c if k == steps - 1 else prev[-1], 3, stride=2) for k in range(steps))))
        return nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, additional_features: torch.Tensor | None = None):
        feats = self.compute_hrnet_feats(x, additional_features)
        out_aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        feats = self.ocr_distri_head(feats, self.ocr_gather_head(feats, out_aux))
        return self.cls_head(feats), out_aux

    def compute_hrnet_feats(self, x: torch.Tensor, additional_features: torch.Tensor | None = None) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if additional_features is not None:
            x = x + additional_features
        x = self.layer1(self.relu(self.bn2(self.conv2(x))))
        xs = [x]
        for transition, stage in ((self.transition1, self.stage2), (self.transition2, self.stage3),
                                  (self.transition3, self.stage4)):
            # New branches grow from the last (coarsest) output of the previous stage.
            xs = stage([t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)])
        return torch.cat([xs[0], *(_upsample_to(x, xs[0]) for x in xs[1:])], 1)
