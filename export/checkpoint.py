"""Checkpoint IO: ``{'state_dict': ..., 'config': {...}}`` files.

``config`` always holds ``network`` (a key of :data:`clickmask.export.networks.NETWORKS`) and
``input_size`` (the serving size S); ``network_kwargs`` (optional) are passed to the builder.
Anything else (training hyper-parameters, validation scores) is recorded as given.

Weights may be stored in float16 to keep the committed checkpoint small; they are loaded back
as float32.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .networks import NETWORKS, build_network


class CheckpointError(ValueError):
    """A checkpoint file that cannot be turned into a network."""


def save_checkpoint(path: str | Path, net: nn.Module, config: dict[str, Any], *, half: bool = False,
                    **extra: Any) -> Path:
    """Write ``net``'s weights and ``config`` (plus ``extra`` top-level entries) to ``path``.

    Args:
        path: output file; parent folders are created.
        net: the network; its ``state_dict`` is saved on the CPU.
        config: must contain ``network``; ``input_size`` defaults to 320 when absent.
        half: store floating-point tensors as float16 (halves the file size).
        extra: more top-level entries, e.g. ``optimizer=...``, ``epoch=...``.
    """
    if "network" not in config:
        raise CheckpointError("config must name the network, e.g. {'network': 'efficientnet-lite0'}")
    config = {"input_size": 320, **config}
    state = {}
    for key, value in net.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.half()
        state[key] = value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"state_dict": state, "config": config, **extra}, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load the raw checkpoint dict (``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a clickmask checkpoint: expected a dict with "
                              f"'state_dict' and 'config'")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Build the network named in the checkpoint and load its weights strictly.

    Returns ``(net, config)``; the net is in eval mode, float32, on ``map_location``.
    """
    ckpt = read_checkpoint(path, map_location)
    config = dict(ckpt["config"])
    name = config.get("network")
    if name not in NETWORKS:
        raise CheckpointError(f"{path}: config names network {name!r}; known networks: {sorted(NETWORKS)}")
    kwargs = dict(config.get("network_kwargs") or {})
    if "pretrained_encoder" in inspect.signature(NETWORKS[name]).parameters:
        kwargs["pretrained_encoder"] = False  # every weight comes from the checkpoint
    net = build_network(name, **kwargs)
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    net.load_state_dict(state, strict=True)
    net.to(map_location).eval()
    return net, config
