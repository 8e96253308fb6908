"""Segmentation networks and their registry.

Every network has the same call signature::

    net(image, clicks, prev_mask) -> {"instances": logits, "instances_aux": logits}

    image:     float [B, 3, S, S], RGB in 0..1 (ImageNet normalisation happens inside)
    clicks:    float [B, 2, S, S], 0/1 disks, channel 0 positive, channel 1 negative
    prev_mask: float [B, 1, S, S], previous probability in 0..1
    logits:    float [B, 1, S, S]

``NETWORKS`` maps a name to a small builder over one private builder per family (SAM's
``build_sam`` style); ``build_network(name, **kw)`` is the entry point the CLI, checkpoint IO
and export use.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .efficientnet_lite import STEM_CHANNELS, EfficientNetLite, load_imagenet_weights
from .ritm_model import build_ritm_hrnet18, build_ritm_hrnet18s, build_ritm_hrnet32

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ScaleLayer(nn.Module):
    """Multiply by a learnable scalar (RITM's ``ScaleLayer``, ``init_value=0.05``)."""

    def __init__(self, init_value: float = 0.05):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Conv1SFusion(nn.Module):
    """RITM's Conv1S: cat(prev_mask, pos, neg) -> 1x1 to 16 -> LeakyReLU(0.2) -> 3x3/2 -> scale."""

    def __init__(self, out_channels: int, mid_channels: int = 16, scale_init: float = 0.05):
        super().__init__()
        self.conv_in = nn.Conv2d(3, mid_channels, 1)
        self.act = nn.LeakyReLU(0.2)
        self.conv_out = nn.Conv2d(mid_channels, out_channels, 3, stride=2, padding=1)
        self.scale = ScaleLayer(scale_init)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.scale(self.conv_out(self.act(self.conv_in(maps))))


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 + pointwise 1x1, each with BN and ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            ConvBNReLU(in_channels, in_channels, 3, groups=in_channels),
            ConvBNReLU(in_channels, out_channels, 1),
        )


def _up2(x: torch.Tensor) -> torch.Tensor:
    # A constant scale (not a size read from another tensor) keeps the exported graph static.
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class FPNDecoder(nn.Module):
    """Top-down decoder from strides 32/16/8/4 to stride 4.

    Laterals (1x1) bring each level to ``channels``; each level adds the upsampled coarser
    level and refines it with a separable conv. Returns (stride-4 features, stride-8 features).
    """

    def __init__(self, in_channels: tuple[int, int, int, int], channels: int):
        super().__init__()
        c4, c8, c16, c32 = in_channels
        self.lateral32 = ConvBNReLU(c32, channels)
        self.lateral16 = ConvBNReLU(c16, channels)
        self.lateral8 = ConvBNReLU(c8, channels)
        self.lateral4 = ConvBNReLU(c4, channels)
        self.refine16 = SeparableConv(channels, channels)
        self.refine8 = SeparableConv(channels, channels)
        self.refine4 = nn.Sequential(SeparableConv(channels, channels), SeparableConv(channels, channels))

    def forward(self, f4, f8, f16, f32):
        p = self.lateral32(f32)
        p16 = self.refine16(self.lateral16(f16) + _up2(p))
        p8 = self.refine8(self.lateral8(f8) + _up2(p16))
        p4 = self.refine4(self.lateral4(f4) + _up2(p8))
        return p4, p8


class ClickSegmentationNet(nn.Module):
    """RITM-style interactive segmentation network on an EfficientNet-Lite encoder (``encoder``:
    ``efficientnet-lite0``, the default, or ``efficientnet-lite2``)."""

    def __init__(self, decoder_channels: int = 64, aux_channels: int = 32, scale_init: float = 0.05,
                 pretrained_encoder: bool = True, encoder: str = "efficientnet-lite0"):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone = EfficientNetLite(encoder, include_head=False)
        if pretrained_encoder:
            load_imagenet_weights(self.backbone)
        self.maps_transform = Conv1SFusion(STEM_CHANNELS, scale_init=scale_init)
        _, c4, c8, c16, c32 = self.backbone.feature_channels
        self.decoder = FPNDecoder((c4, c8, c16, c32), decoder_channels)
        self.head = nn.Conv2d(decoder_channels, 1, 1)
        self.aux_head = nn.Sequential(ConvBNReLU(decoder_channels, aux_channels, 1),
                                      nn.Conv2d(aux_channels, 1, 1))

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        extra = self.maps_transform(torch.cat((prev_mask, clicks), dim=1))
        _, f4, f8, f16, f32 = self.backbone(x, stem_extra=extra)
        p4, p8 = self.decoder(f4, f8, f16, f32)
        logits = F.interpolate(self.head(p4), scale_factor=4.0, mode="bilinear", align_corners=True)
        aux = F.interpolate(self.aux_head(p8), scale_factor=8.0, mode="bilinear", align_corners=True)
        return {"instances": logits, "instances_aux": aux}


def _build_efficientnet_lite(encoder: str, pretrained_encoder: bool, decoder_channels: int = 64,
                             **kwargs) -> ClickSegmentationNet:
    return ClickSegmentationNet(decoder_channels=decoder_channels, pretrained_encoder=pretrained_encoder,
                                encoder=encoder, **kwargs)


def build_efficientnet_lite0(pretrained_encoder: bool = True, **kwargs) -> ClickSegmentationNet:
    """The default clickmask network (ImageNet encoder unless ``pretrained_encoder=False``)."""
    return _build_efficientnet_lite("efficientnet-lite0", pretrained_encoder, **kwargs)


def build_efficientnet_lite2(pretrained_encoder: bool = True, **kwargs) -> ClickSegmentationNet:
    """The same network on the larger EfficientNet-Lite2 encoder: an option, not the CPU default."""
    return _build_efficientnet_lite("efficientnet-lite2", pretrained_encoder, **kwargs)


NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "efficientnet-lite0": build_efficientnet_lite0,
    "efficientnet-lite2": build_efficientnet_lite2,
    # RITM HRNet-OCR family, parameter names of the official checkpoints (export/ritm_model.py).
    "ritm-hrnet18s": build_ritm_hrnet18s,
    "ritm-hrnet18": build_ritm_hrnet18,
    "ritm-hrnet32": build_ritm_hrnet32,
}

DEFAULT_NETWORK = "efficientnet-lite0"


def build_network(name: str, **kwargs) -> nn.Module:
    """Build a registered network by name; ``kwargs`` go to its builder."""
    try:
        builder = NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; choose one of {sorted(NETWORKS)}") from None
    return builder(**kwargs)
