"""RITM's HRNet-OCR interactive segmentation model behind clickmask's network interface.

The parameter names are RITM's (``HRNetModel`` from ``isegm/model/is_hrnet_model.py`` as
configured by its ``models/iter_mask/hrnet*_cocolvis_itermask_3p.py``), so the state dict of an
official checkpoint loads with ``strict=True``:

- ``maps_transform.{0,2,3}``: Conv1S fusion of cat(prev_mask, pos, neg): 1x1 conv to 16,
  LeakyReLU(0.2), 3x3 stride-2 conv to 64, learnable scale (RITM uses ``|scale|``);
- ``feature_extractor.*``: :class:`clickmask.export.hrnet.HighResolutionNet`.

What differs from RITM is only where the clicks come from: RITM's ``DistMaps`` draws disks of
radius 5 from click coordinates inside the graph (padding absent clicks with 1e6, which
overflows FP16); here the disks arrive as a tensor drawn by ``clickmask.client.encoding`` with the
same radius, so that code never enters the exported graph.

Variants (published RITM checkpoints, COCO+LVIS, NoC@90 on GrabCut):

========================  =====  =========  =====  ===========
registry name             width  ocr_width  small  NoC@90 GC
========================  =====  =========  =====  ===========
``ritm-hrnet18s``         18     48         yes    1.68
``ritm-hrnet18``          18     64         no     1.54
``ritm-hrnet32``          32     128        no     1.56
========================  =====  =========  =====  ===========
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from .hrnet import HighResolutionNet, upsample_to

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAPS_MID_CHANNELS = 16
STEM_CHANNELS = 64
# RITM's iter_mask models: use_disks=True, norm_radius=5 (the client's DISK_RADIUS).
RITM_DISK_RADIUS = 5


@dataclass(frozen=True)
class RITMVariant:
    """Hyper-parameters of one published RITM HRNet model."""

    name: str
    width: int
    ocr_width: int
    small: bool


RITM_VARIANTS: dict[str, RITMVariant] = {
    v.name: v for v in (
        RITMVariant("ritm-hrnet18s", width=18, ocr_width=48, small=True),
        RITMVariant("ritm-hrnet18", width=18, ocr_width=64, small=False),
        RITMVariant("ritm-hrnet32", width=32, ocr_width=128, small=False),
    )
}


class AbsScaleLayer(nn.Module):
    """Multiply by ``|scale|`` (RITM's ``ScaleLayer`` with ``lr_mult=1``; parameter ``scale``)."""

    def __init__(self, init_value: float = 0.05):
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.abs(self.scale)


class RITMHRNetModel(nn.Module):
    """RITM HRNet-OCR with prev_mask and disk clicks; clickmask's network interface.

    ``forward(image [B,3,S,S] 0..1, clicks [B,2,S,S] 0/1, prev_mask [B,1,S,S] 0..1)`` returns
    ``{"instances": logits, "instances_aux": logits}``, both ``[B,1,S,S]`` (bilinear,
    ``align_corners=True``, as RITM's ``ISModel.forward``).
    """

    def __init__(self, width: int, ocr_width: int, small: bool = False, leaky_relu: bool = True):
        super().__init__()
        # Not persistent: RITM's BatchImageNormalize is not a module, so the official state
        # dict has no normalisation entries either.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.maps_transform = nn.Sequential(
            nn.Conv2d(3, MAPS_MID_CHANNELS, 1),
            nn.LeakyReLU(0.2) if leaky_relu else nn.ReLU(inplace=True),
            nn.Conv2d(MAPS_MID_CHANNELS, STEM_CHANNELS, 3, stride=2, padding=1),
            AbsScaleLayer(0.05),
        )
        self.feature_extractor = HighResolutionNet(width=width, ocr_width=ocr_width, small=small, num_classes=1)

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        coord_features = self.maps_transform(torch.cat((prev_mask, clicks), dim=1))
        logits, aux = self.feature_extractor(x, coord_features)
        size = image.shape[-2:]
        return {"instances": upsample_to(logits, size), "instances_aux": upsample_to(aux, size)}


def _build_ritm_hrnet(variant: str, **kwargs: Any) -> RITMHRNetModel:
    v = RITM_VARIANTS[variant]
    return RITMHRNetModel(width=v.width, ocr_width=v.ocr_width, small=v.small, **kwargs)


def build_ritm_hrnet18s(**kwargs: Any) -> RITMHRNetModel:
    """RITM HRNet18s-OCR48 (randomly initialised; load an official checkpoint for weights)."""
    return _build_ritm_hrnet("ritm-hrnet18s", **kwargs)


def build_ritm_hrnet18(**kwargs: Any) -> RITMHRNetModel:
    """RITM HRNet18-OCR64 (randomly initialised; load an official checkpoint for weights)."""
    return _build_ritm_hrnet("ritm-hrnet18", **kwargs)


def build_ritm_hrnet32(**kwargs: Any) -> RITMHRNetModel:
    """RITM HRNet32-OCR128 (randomly initialised; load an official checkpoint for weights)."""
    return _build_ritm_hrnet("ritm-hrnet32", **kwargs)


# ------------------------------------------------------------------ official checkpoint files
class RITMFormatError(ValueError):
    """A RITM checkpoint that clickmask cannot serve under its contract."""


def is_ritm_checkpoint(ckpt: Mapping[str, Any]) -> bool:
    """True for RITM's own ``{'state_dict', 'config'}`` files (config from ``@serialize``)."""
    config = ckpt.get("config")
    state = ckpt.get("state_dict")
    if isinstance(config, Mapping) and "network" in config:
        return False  # clickmask's own format
    if isinstance(config, Mapping) and "class" in config and "params" in config:
        return True
    return isinstance(state, Mapping) and any(str(k).startswith("feature_extractor.") for k in state)


def ritm_params(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """RITM's serialized ``config['params']`` as ``{name: value}`` (empty when absent)."""
    params = (config or {}).get("params") or {}
    return {k: (p.get("value") if isinstance(p, Mapping) else p) for k, p in params.items()}


def infer_ritm_variant(state_dict: Mapping[str, torch.Tensor]) -> tuple[int, int, bool]:
    """(width, ocr_width, small) read from the tensor shapes of an HRNet-OCR state dict.

    - width: output channels of ``transition1.0`` (the 256 -> width 3x3 conv);
    - ocr_width: output channels of the OCR key projection ``f_pixel.0``;
    - small: ``layer1`` has 2 Bottleneck blocks (HRNet18s) instead of 4.
    """
    prefix = "feature_extractor."
    try:
        width = int(state_dict[prefix + "transition1.0.0.weight"].shape[0])
        ocr_width = int(state_dict[prefix + "ocr_distri_head.object_context_block.f_pixel.0.weight"].shape[0])
    except KeyError as exc:
        raise RITMFormatError(f"not an HRNet-OCR state dict: {exc.args[0]!r} is missing") from None
    small = (prefix + "layer1.2.conv1.weight") not in state_dict
    return width, ocr_width, small


def ritm_variant_name(width: int, ocr_width: int, small: bool) -> str:
    """The registry name of a published variant; :class:`RITMFormatError` for any other."""
    for v in RITM_VARIANTS.values():
        if (v.width, v.ocr_width, v.small) == (width, ocr_width, small):
            return v.name
    known = ", ".join(f"{v.name} (width {v.width}, ocr_width {v.ocr_width}, small={v.small})"
                      for v in RITM_VARIANTS.values())
    raise RITMFormatError(f"HRNet with width {width}, ocr_width {ocr_width}, small={small} is not a "
                          f"registered RITM variant; known: {known}")


def check_ritm_config(params: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Refuse RITM models whose inputs differ from clickmask's contract; return builder kwargs.

    clickmask feeds prev_mask + two disk maps of radius 5 through Conv1S (``maps_transform``).
    RITM's baselines without prev_mask, with distance maps (``use_disks=False``) or with
    ``rgb_conv`` fusion would load wrongly or not at all, so they are rejected with the reason.
    """
    reasons = []
    if params.get("use_rgb_conv") is True or "rgb_conv.0.weight" in state_dict:
        reasons.append("it fuses clicks with rgb_conv (clickmask supports the Conv1S maps_transform)")
    if params.get("with_prev_mask") is False:
        reasons.append("it was trained without prev_mask")
    if params.get("use_disks") is False:
        reasons.append("it encodes clicks as distance maps (use_disks=False), clickmask sends disks")
    radius = params.get("norm_radius")
    if params.get("use_disks") and radius is not None and radius != RITM_DISK_RADIUS:
        reasons.append(f"its disks have radius {radius}, clickmask draws radius {RITM_DISK_RADIUS}")
    if params.get("clicks_groups") is not None:
        reasons.append("it uses click groups")
    if params.get("binary_prev_mask") is True:
        reasons.append("it thresholds prev_mask (binary_prev_mask=True)")
    weight = state_dict.get("maps_transform.0.weight")
    if weight is not None and tuple(weight.shape[:2]) != (MAPS_MID_CHANNELS, 3):
        reasons.append(f"maps_transform.0 takes {weight.shape[1]} channels, expected 3 (prev_mask, pos, neg)")
    if reasons:
        raise RITMFormatError("this RITM model cannot be served with clickmask's contract: " + "; ".join(reasons))
    kwargs: dict[str, Any] = {}
    if params.get("use_leaky_relu") is False:
        kwargs["leaky_relu"] = False
    return kwargs
