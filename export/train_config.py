"""Training hyper-parameters (no torch import, so the CLI can build its parser cheaply).

Every field becomes a ``clickmask train --<field-with-dashes>`` option and is recorded in
``config.json`` beside the checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from .network_names import NETWORK_NAMES


def _opt(default: Any, help: str, **kw: Any):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class TrainConfig:
    # where
    output: str = _opt("runs/lite0", "output folder: checkpoints, config.json, metrics.jsonl")
    data_root: str = _opt("../shared/datasets", "dataset root (relative paths are relative to the working directory, "
                                                 "normally the repository root)")
    train_sets: tuple[str, ...] = _opt(("COCO_MVal", "COCO128seg", "WeizmannHorse"),
                                       "training sets under data_root (never GrabCut or Berkeley)")
    val_fraction: float = _opt(0.05, "fraction of every training set held out for validation (seeded, fixed)")
    min_object_fraction: float = _opt(0.01, "instance-id masks: keep objects covering more than this fraction")
    set_weights: str = _opt("", "sampling weight of each training set, e.g. 'CCP=0.3,MSRC=0.1' (sets not named "
                                "keep a weight proportional to their object count; empty: uniform over objects)")
    val_list: str = _opt("", "committed validation list (one DATASET/<id>[#k] per line); its images are never "
                             "trained on. Empty: val_samples objects of the seeded val_fraction split")
    # network
    network: str = _opt("efficientnet-lite0", "registered network name")
    input_size: int = _opt(320, "serving size S recorded in the checkpoint")
    init_from: str = _opt("", "start from the weights of this clickmask checkpoint (fine-tuning; not with --resume)")
    crop_size: int = _opt(256, "training crop size (a multiple of 32)")
    # optimisation
    batch_size: int = _opt(8, "batch size")
    iters: int = _opt(6000, "total optimiser steps (cosine decay spans them)")
    max_minutes: float = _opt(0.0, "stop this many minutes after the start, set-up included (after the step "
                                   "in progress; last.pt is written); 0: no time limit")
    lr: float = _opt(5e-4, "Adam learning rate")
    beta1: float = _opt(0.9, "Adam beta1")
    beta2: float = _opt(0.999, "Adam beta2")
    weight_decay: float = _opt(0.0, "Adam weight decay")
    cosine: bool = _opt(True, "cosine learning-rate decay to lr * min_lr_ratio")
    min_lr_ratio: float = _opt(0.05, "final learning rate as a fraction of lr")
    warmup_iters: int = _opt(100, "linear warm-up steps")
    backbone_lr_mult: float = _opt(0.1, "learning-rate multiplier of the ImageNet encoder (RITM uses 0.1)")
    # loss
    nfl_alpha: float = _opt(0.5, "normalized focal loss alpha")
    nfl_gamma: float = _opt(2.0, "normalized focal loss gamma")
    aux_weight: float = _opt(0.4, "weight of the BCE loss on the auxiliary head")
    # clicks
    max_pos_clicks: int = _opt(3, "initial positive clicks: 1..max")
    max_neg_clicks: int = _opt(2, "initial negative clicks: 0..max")
    part_sets: str = _opt("", "comma-separated training sets whose objects are parts of a larger object (CCP's garments, "
                              "MSRC's body and face): their samples always carry at least one negative click "
                              "next to the object, so that one positive click alone keeps meaning 'the whole "
                              "object' ('': none)")
    max_extra_rounds: int = _opt(3, "iterative training: 0..max extra no-grad click rounds")
    prev_mask_drop: float = _opt(0.0, "probability of zeroing prev_mask on the first round (always zero without rounds)")
    # augmentation
    scale_min: float = _opt(0.85, "scale jitter of full views (1.0 = longer side at input_size): minimum")
    scale_max: float = _opt(1.3, "scale jitter of full views: maximum")
    color_jitter: float = _opt(0.2, "brightness/contrast/saturation jitter amplitude")
    flip: bool = _opt(True, "random horizontal flip")
    copy_paste: float = _opt(0.0, "probability that a sample's object is pasted onto a background image "
                                  "(copy-paste augmentation; 0: off)")
    backgrounds: str = _opt("BSDS500_backgrounds", "set under data_root whose images/ are the copy-paste backgrounds")
    hard_from: str = _opt("", "hard-object sampling: score every training object with this checkpoint first "
                              "(IoU after hard_clicks protocol clicks) and draw the ones it does badly on more "
                              "often (see clickmask.export.hardness; '': off)")
    hard_mix: float = _opt(0.5, "hard-object sampling: share of the draws within a set made in proportion to "
                                "1 - IoU (the rest uniform)")
    hard_clicks: int = _opt(1, "hard-object sampling: protocol clicks before the IoU that scores an object")
    distill_from: str = _opt("", "distillation: a frozen teacher checkpoint whose probability on every training "
                                 "input (with distill_flip, averaged with its mirrored answer, as Session(flip=True) "
                                 "does) is a second, soft target; '': off")
    distill_weight: float = _opt(1.0, "distillation: weight of the BCE to the teacher's probability (added to the "
                                      "loss on the ground truth)")
    distill_flip: bool = _opt(True, "distillation: average the teacher's answer with its answer to the mirrored "
                                    "input (test-time flip averaging, distilled into one pass)")
    # validation and checkpoints
    val_samples: int = _opt(40, "validation samples for NoC@90 (fixed subset)")
    val_max_clicks: int = _opt(20, "max clicks in validation")
    val_every: int = _opt(500, "validate every N steps (and at the end); 0: no validation during training")
    snapshot_every: int = _opt(0, "keep step-NNNNNN.pt (float16) every N steps, to score later with "
                                  "'clickmask select' (0: none)")
    checkpoint_minutes: float = _opt(5.0, "write last.pt at least this often (minutes)")
    half_best: bool = _opt(True, "store best.pt weights as float16 (loaded back as float32)")
    # runtime
    seed: int = _opt(0, "random seed (data split, sampling, init)")
    threads: int = _opt(2, "torch CPU threads")
    workers: int = _opt(0, "DataLoader worker processes that draw the batches (0: in the training process); "
                           "batch i is still a function of (seed, step)")
    device: str = _opt("auto", "auto, cpu or cuda")
    log_every: int = _opt(10, "update the progress bar / metrics.jsonl every N steps")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train_sets"] = list(self.train_sets)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training options {unknown}")
        data = dict(data)
        if "train_sets" in data:
            data["train_sets"] = tuple(data["train_sets"])
        return cls(**data)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """One option per :class:`TrainConfig` field (default None: not given), plus ``--resume``."""
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT/last.pt with its recorded config (options given here override it)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        kw = {"dest": f.name, "default": None, "help": f"{f.metadata['help']} (default: {f.default!r})"}
        if tp is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(tp) is tuple:
            p.add_argument(flag, nargs="+", **kw)
        elif f.name == "network":
            p.add_argument(flag, type=tp, choices=NETWORK_NAMES, **kw)
        else:
            p.add_argument(flag, type=tp, **kw)


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given explicitly on the command line."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
