"""Checkpoint IO: ``{'state_dict': ..., 'config': {...}}`` files.

``config`` always holds ``network`` (a key of :data:`clickmask.export.networks.NETWORKS`) and
``input_size`` (the serving size S); ``network_kwargs`` (optional) are passed to the builder.
Anything else (training hyper-parameters, validation scores) is recorded as given.

Weights may be stored in float16 to keep the committed checkpoint small; they are loaded back
as float32.

Official RITM checkpoints (``torch.save({'state_dict': ..., 'config': ...})`` where ``config``
is RITM's own ``{'class': ..., 'params': {...}}``) load too: :func:`load_checkpoint` recognises
them and calls :func:`load_ritm_checkpoint`, which picks the HRNet variant from the tensor
shapes (see :mod:`clickmask.export.ritm_model`).
"""

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .networks import NETWORKS, build_network
from .ritm_model import (RITM_VARIANTS, RITMFormatError, check_ritm_config, infer_ritm_variant, is_ritm_checkpoint,
                         ritm_params, ritm_variant_name)

DEFAULT_INPUT_SIZE = 320


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
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} holds objects other than tensors and plain Python values, which are "
                              f"not loaded (weights_only=True): {exc}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a clickmask checkpoint: expected a dict with "
                              f"'state_dict' and 'config'")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    network: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the network named in the checkpoint and load its weights strictly.

    An official RITM checkpoint is recognised and loaded by :func:`load_ritm_checkpoint`.
    ``network``, when given, is the registry name the caller expects; a file holding another
    network raises :class:`CheckpointError`.

    Returns ``(net, config)``; the net is in eval mode, float32, on ``map_location``.
    """
    ckpt = read_checkpoint(path, map_location)
    if is_ritm_checkpoint(ckpt):
        return _load_ritm(Path(path), ckpt, network, map_location)
    config = dict(ckpt["config"])
    name = config.get("network")
    if name not in NETWORKS:
        raise CheckpointError(f"{path}: config names network {name!r}; known networks: {sorted(NETWORKS)}")
    if network is not None and network != name:
        raise CheckpointError(f"{path}: the checkpoint holds {name}, not {network}")
    kwargs = {**dict(config.get("network_kwargs") or {}), **_no_pretrained(name)}  # every weight is in the file
    net = build_network(name, **kwargs)
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    net.load_state_dict(state, strict=True)
    net.to(map_location).eval()
    return net, config


def average_checkpoints(paths: list[str | Path], output: str | Path, weights: list[float] | None = None, *,
                        half: bool = True) -> Path:
    """Write the weighted mean of clickmask checkpoints of one network to ``output`` (a
    "model soup": snapshots of one fine-tuning run, or a run and its start).

    Floating-point tensors (weights and BatchNorm statistics) are averaged in float32; integer
    ones (``num_batches_tracked``) are taken from the first file. Every file must hold the same
    network with the same tensors. ``weights`` (default: equal) are normalised to sum to 1.
    The config is the first file's, with ``averaged_from`` and ``average_weights`` added.
    """
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(paths)}")
    weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths):
        raise CheckpointError(f"{len(weights)} weights for {len(paths)} checkpoints: give one weight per checkpoint")
    if any(not w >= 0 for w in weights) or sum(weights) <= 0:
        raise CheckpointError(f"weights must be >= 0 with a positive sum, got {weights}")
    weights = [w / sum(weights) for w in weights]
    first = read_checkpoint(paths[0])
    config = dict(first["config"])
    if is_ritm_checkpoint(first) or config.get("network") not in NETWORKS:
        raise CheckpointError(f"{paths[0]}: only clickmask checkpoints can be averaged")
    mean = {k: (v.float() * weights[0] if v.is_floating_point() else v.clone()) for k, v in first["state_dict"].items()}
    for path, weight in zip(paths[1:], weights[1:]):
        ckpt = read_checkpoint(path)
        other, state = ckpt["config"].get("network"), ckpt["state_dict"]
        if other != config["network"]:
            raise CheckpointError(f"{path} holds {other}, {paths[0]} holds {config['network']}: average one network")
        if set(state) != set(mean):
            diff = sorted(set(state) ^ set(mean))[:3]
            raise CheckpointError(f"{path} and {paths[0]} hold different tensors (e.g. {diff})")
        for key, value in state.items():
            if value.shape != mean[key].shape:
                raise CheckpointError(f"{path}: {key} is {tuple(value.shape)}, {tuple(mean[key].shape)} in {paths[0]}")
            if value.is_floating_point():
                mean[key] += value.float() * weight
    config.update(averaged_from=[str(p) for p in paths], average_weights=[round(w, 6) for w in weights], step=None)
    net = build_network(config["network"], **{**dict(config.get("network_kwargs") or {}),
                                              **_no_pretrained(config["network"])})
    net.load_state_dict(mean, strict=True)
    return save_checkpoint(output, net, config, half=half)


def _no_pretrained(name: str) -> dict[str, bool]:
    return {"pretrained_encoder": False} if "pretrained_encoder" in inspect.signature(NETWORKS[name]).parameters else {}


def load_ritm_checkpoint(path: str | Path, network: str | None = None,
                         map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load an official RITM HRNet-OCR checkpoint strictly into a ``ritm-hrnet*`` network.

    Args:
        path: RITM's ``.pth`` file, ``{'state_dict': ..., 'config': {'class': ..., 'params': ...}}``.
        network: the registry name to load into; by default it is inferred from the tensor
            shapes (width 18/32, OCR width 48/64/128, 2 or 4 blocks) and must agree with the
            file's own ``params`` where those name width, ocr_width and small.
        map_location: device of the returned net.

    Returns:
        ``(net, config)``: the net in eval mode, float32; ``config`` is a clickmask config
        (``network``, ``input_size`` 320, ``source: 'ritm'``) with RITM's own under ``ritm_config``.
    """
    return _load_ritm(Path(path), read_checkpoint(path, map_location), network, map_location)


def _load_ritm(path: Path, ckpt: dict[str, Any], network: str | None,
               map_location: str | torch.device) -> tuple[nn.Module, dict[str, Any]]:
    state = ckpt["state_dict"]
    ritm_config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    params = ritm_params(ritm_config)
    try:
        kwargs = check_ritm_config(params, state)
        width, ocr_width, small = infer_ritm_variant(state)
        for key, found in (("width", width), ("ocr_width", ocr_width), ("small", small)):
            if key in params and params[key] != found:
                raise RITMFormatError(f"config says {key}={params[key]!r} but the weights have {key}={found!r}")
        inferred = ritm_variant_name(width, ocr_width, small)
    except RITMFormatError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if network is not None and network != inferred:
        if network not in RITM_VARIANTS:
            raise CheckpointError(f"{path}: {network!r} is not a RITM network; choose one of {sorted(RITM_VARIANTS)}")
        raise CheckpointError(f"{path}: the weights are {inferred}, not {network}")
    net = build_network(inferred, **kwargs)
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not load strictly into {inferred}: {exc}") from None
    net.to(map_location).eval()
    config = {"network": inferred, "input_size": DEFAULT_INPUT_SIZE, "network_kwargs": kwargs, "source": "ritm",
              "ritm_config": ritm_config}
    return net, config
