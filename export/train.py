"""``clickmask train``: the RITM recipe on the project's training sets, CPU first.

- Loss: Normalized Focal Loss (alpha 0.5, gamma 2) on ``instances`` + 0.4 x BCE on
  ``instances_aux``; the zero padding and dataset ignore bands do not count.
- Clicks: 1-3 positives inside the object away from its border and 0-2 negatives near it
  (:func:`clickmask.export.data.sample_initial_clicks`), then 0-3 extra no-grad rounds in which
  :func:`clickmask.client.clicker.next_click` places a click in the error of the previous
  prediction and that prediction becomes ``prev_mask`` (RITM's iterative training).
- Encoding: :func:`clickmask.client.encoding.encode_clicks` with ``CropTransform.full`` on the
  training crop, and ``prev_mask`` quantised to 1/255 like the uint8 contract, so training
  sees what serving sends.
- Adam (5e-4, betas 0.9/0.999), encoder at 0.1 x lr, linear warm-up then cosine decay.
- Validation: NoC@90 on the committed validation list (``--val-list``; held-out training-set
  objects) through the same ``Session`` (zoom-in, threshold) and protocol runner as
  ``clickmask eval``, with the network in torch behind the uint8 contract; ``best.pt`` is the
  checkpoint with the lowest NoC@90. GrabCut and Berkeley are never read.

Outputs in ``--output``: ``config.json`` (every hyper-parameter), ``last.pt`` (resumable,
written every few minutes), ``best.pt`` (float16 weights by default), ``metrics.jsonl``.
Sampling depends only on ``(seed, step)``, so a resumed run sees the same batches.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from clickmask.client.clicker import next_click
from clickmask.client.clicks import Click
from clickmask.client.encoding import CropTransform, encode_clicks
from clickmask.datasets import read_object_list
from clickmask.evaluation import evaluate_sample

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .data import (
    EVALUATION_ONLY_SETS,
    AugmentConfig,
    ClickSamplerConfig,
    ObjectRef,
    TrainSample,
    augment,
    discover_objects,
    list_backgrounds,
    load_image,
    load_object,
    paste_object,
    sample_initial_clicks,
    split_objects,
)
from .losses import IGNORE_LABEL, RITMLoss, SigmoidBCELoss
from .networks import NETWORKS, build_network
from .torch_predictor import TorchPredictor
from .train_config import TrainConfig

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
METRICS_FILE = "metrics.jsonl"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return torch.device(name)


# ------------------------------------------------------------------------------ data split
def load_split(cfg: TrainConfig) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Train objects and the validation objects.

    With ``val_list`` the validation objects are that committed list, and no image of it (nor of
    the seeded held-out split) is trained on; otherwise ``val_samples`` of the split, round-robin
    over sets.
    """
    objects = []
    for name in cfg.train_sets:
        objects += discover_objects(cfg.data_root, name, cfg.min_object_fraction)
    train_objs, val_objs = split_objects(objects, cfg.val_fraction, cfg.seed)
    if cfg.val_list:
        listed = read_object_list(cfg.val_list, cfg.data_root)
        held_out = {o.group for o in listed}
        train_objs = [o for o in train_objs if o.group not in held_out]
        return train_objs, listed
    by_set: dict[str, list[ObjectRef]] = {}
    for obj in val_objs:
        by_set.setdefault(obj.dataset, []).append(obj)
    subset: list[ObjectRef] = []
    queues = [list(v) for _, v in sorted(by_set.items())]
    while len(subset) < cfg.val_samples and any(queues):
        for q in queues:
            if q and len(subset) < cfg.val_samples:
                subset.append(q.pop(0))
    return train_objs, subset


# ------------------------------------------------------------------------------ batches
@dataclass
class Batch:
    samples: list[TrainSample]
    clicks: list[list[Click]]


def parse_set_weights(spec: str, objects: list[ObjectRef]) -> tuple[list[list[ObjectRef]], np.ndarray] | None:
    """Objects grouped by set, and each set's sampling probability (None: uniform over objects)."""
    if not spec.strip():
        return None
    by_set: dict[str, list[ObjectRef]] = {}
    for obj in objects:
        by_set.setdefault(obj.dataset, []).append(obj)
    named: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or weight < 0:
            raise ValueError(f"--set-weights: {part!r} is not NAME=WEIGHT with a weight >= 0")
        if name not in by_set:
            raise ValueError(f"--set-weights: {name!r} is not a training set here ({', '.join(sorted(by_set))})")
        named[name] = weight
    total = len(objects)
    unnamed_share = max(0.0, 1.0 - sum(named.values()))
    unnamed_count = sum(len(v) for k, v in by_set.items() if k not in named) or 1
    names = sorted(by_set)
    weights = np.array([named[n] if n in named else unnamed_share * len(by_set[n]) / unnamed_count for n in names])
    if weights.sum() <= 0:
        raise ValueError(f"--set-weights {spec!r} gives every set weight 0 (of {total} objects)")
    return [by_set[n] for n in names], weights / weights.sum()


def _draw_object(objects: list[ObjectRef], sets, rng: np.random.Generator) -> ObjectRef:
    """One object: uniform (``sets`` None), or a set by its weight and then an object of it,
    uniformly or, with a third element (hard-object sampling), by that set's probabilities."""
    if sets is None:
        return objects[int(rng.integers(len(objects)))]
    groups, probs = sets[0], sets[1]
    index = int(rng.choice(len(groups), p=probs))
    group = groups[index]
    if len(sets) > 2:
        return group[int(rng.choice(len(group), p=sets[2][index]))]
    return group[int(rng.integers(len(group)))]


def hard_sampling(cfg: TrainConfig, train_objs: list[ObjectRef], sets, out: Path, progress: bool):
    """``sets`` with the within-set probabilities of hard-object sampling (``cfg.hard_from``)."""
    from .hardness import describe, score_objects, within_set_weights

    if sets is None:
        sets = ([list(train_objs)], np.array([1.0]))
    ious = score_objects(cfg.hard_from, train_objs, cfg.input_size, cfg.hard_clicks, cfg.threads,
                         cache_dir=out, progress=progress)
    within = within_set_weights(sets[0], ious, cfg.hard_mix)
    log.info("hard-object sampling from %s: %s", cfg.hard_from, describe(sets[0], within, ious))
    return sets[0], sets[1], within


def part_set_names(cfg: TrainConfig) -> frozenset[str]:
    """The sets named by ``cfg.part_sets``; each must be one of ``cfg.train_sets``."""
    names = frozenset(n.strip() for n in cfg.part_sets.split(",") if n.strip())
    unknown = sorted(names - set(cfg.train_sets))
    if unknown:
        raise ValueError(f"--part-sets names {unknown}, which are not among --train-sets {list(cfg.train_sets)}")
    return names


def make_batch(objects: list[ObjectRef], cfg: TrainConfig, rng: np.random.Generator, sets=None,
               backgrounds: list[Path] | None = None) -> Batch:
    aug = AugmentConfig(crop_size=cfg.crop_size, view_size=cfg.input_size, scale_min=cfg.scale_min, scale_max=cfg.scale_max,
                        color_jitter=cfg.color_jitter, flip=cfg.flip)
    clicker_cfg = ClickSamplerConfig(max_pos=cfg.max_pos_clicks, max_neg=cfg.max_neg_clicks)
    part_clicker_cfg = replace(clicker_cfg, min_neg=1)
    part_sets = part_set_names(cfg)
    samples, clicks = [], []
    attempts = 0
    while len(samples) < cfg.batch_size:
        attempts += 1
        if attempts > 50 * cfg.batch_size:
            raise RuntimeError("could not draw a training batch: objects too small for the crop size?")
        obj = _draw_object(objects, sets, rng)
        image, gt, ignore = load_object(obj)
        if backgrounds and cfg.copy_paste > 0 and rng.random() < cfg.copy_paste:
            background = load_image(backgrounds[int(rng.integers(len(backgrounds)))])
            image, gt, ignore = paste_object(image, gt, background, rng)
        sample = augment(image, gt, ignore, aug, rng)
        if sample is None:
            continue
        sampler = part_clicker_cfg if obj.dataset in part_sets else clicker_cfg
        sample_clicks = sample_initial_clicks(sample.gt, sample.valid, sampler, rng, sample.ignore)
        if not any(c.positive for c in sample_clicks):
            continue
        samples.append(sample)
        clicks.append(sample_clicks)
    return Batch(samples, clicks)


class StepBatches(torch.utils.data.Dataset):
    """Map-style dataset for ``workers > 0``: item i is the batch of step ``start + i``.

    It is ``make_batch(objects, cfg, np.random.default_rng([cfg.seed, step]), sets)``, returned
    with the generator's state after drawing it (the training step goes on drawing from it), so a
    run with worker processes sees exactly the batches of a run without, and a resumed run the
    same batches as an uninterrupted one.
    """

    def __init__(self, objects: list[ObjectRef], cfg: TrainConfig, sets, start: int,
                 backgrounds: list[Path] | None = None):
        self.objects, self.cfg, self.sets, self.start = objects, cfg, sets, int(start)
        self.backgrounds = backgrounds

    def __len__(self) -> int:
        return max(0, self.cfg.iters - self.start)

    def __getitem__(self, index: int) -> tuple[dict[str, Any], Batch]:
        rng = np.random.default_rng([self.cfg.seed, self.start + int(index)])
        batch = make_batch(self.objects, self.cfg, rng, self.sets, self.backgrounds)
        return rng.bit_generator.state, batch


def _as_is(item):
    return item


def _worker_init(_worker_id: int) -> None:
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def batch_stream(objects: list[ObjectRef], cfg: TrainConfig, sets, start: int,
                 backgrounds: list[Path] | None = None):
    """``(rng, batch)`` for steps ``start, start + 1, ...``: drawn here, or by ``cfg.workers`` processes."""
    if cfg.workers <= 0:
        for step in range(start, cfg.iters):
            rng = np.random.default_rng([cfg.seed, step])
            yield rng, make_batch(objects, cfg, rng, sets, backgrounds)
        return
    loader = torch.utils.data.DataLoader(StepBatches(objects, cfg, sets, start, backgrounds), batch_size=None, shuffle=False,
                                         num_workers=cfg.workers, collate_fn=_as_is, worker_init_fn=_worker_init,
                                         prefetch_factor=4)
    for state, batch in loader:
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        yield rng, batch


def _click_maps(clicks: list[list[Click]], size: int) -> torch.Tensor:
    t = CropTransform.full(size, size, size)
    return torch.from_numpy(np.stack([encode_clicks(c, t) for c in clicks])).float()


def _labels(samples: list[TrainSample]) -> torch.Tensor:
    labels = np.stack([np.where(s.ignore, IGNORE_LABEL, s.gt.astype(np.float32)) for s in samples])
    return torch.from_numpy(labels.astype(np.float32))[:, None]


def _images(samples: list[TrainSample]) -> torch.Tensor:
    return torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255.0


def iterative_clicks(net: torch.nn.Module, image: torch.Tensor, batch: Batch, rounds: int,
                     device: torch.device, prev_mask_drop: float, rng: np.random.Generator):
    """RITM's no-grad click rounds: predict, click in the error, feed the prediction back.

    Returns the click maps and prev_mask tensors for the training forward pass.
    """
    size = image.shape[-1]
    prev = torch.zeros(image.shape[0], 1, size, size, device=device)
    clicks = [list(c) for c in batch.clicks]
    if rounds == 0:
        return _click_maps(clicks, size).to(device), prev
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for _ in range(rounds):
            logits = net(image, _click_maps(clicks, size).to(device), prev)["instances"]
            # what the uint8 contract carries: probability quantised to 1/255
            prev = torch.round(torch.sigmoid(logits) * 255.0) / 255.0
            pred = (prev[:, 0] >= 0.5).cpu().numpy()
            for i, sample in enumerate(batch.samples):
                click = next_click(sample.gt, pred[i], sample.ignore, previous=clicks[i])
                if click is not None:
                    clicks[i].append(click)
    net.train(was_training)
    if prev_mask_drop > 0:
        keep = torch.from_numpy((rng.random(image.shape[0]) >= prev_mask_drop).astype(np.float32))
        prev = prev * keep.view(-1, 1, 1, 1).to(device)
    return _click_maps(clicks, size).to(device), prev


def mirror_content(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``x`` [B, C, S, S] with each sample's real-image columns (``valid`` [B, S, S]) flipped
    left-right and the padding left in place: the training twin of the Session's flip pass."""
    out = x.clone()
    cols = valid.any(dim=1)  # [B, S]
    for i in range(x.shape[0]):
        idx = torch.nonzero(cols[i]).flatten()
        if idx.numel():
            c0, c1 = int(idx[0]), int(idx[-1]) + 1
            out[i, :, :, c0:c1] = x[i, :, :, c0:c1].flip(-1)
    return out


def teacher_target(teacher: torch.nn.Module, image: torch.Tensor, click_maps: torch.Tensor, prev: torch.Tensor,
                   valid: torch.Tensor, flip: bool) -> torch.Tensor:
    """The frozen teacher's probability for the training inputs; with ``flip`` the mean of its
    answer and its mirrored answer to the mirrored inputs (what ``Session(flip=True)`` serves)."""
    with torch.no_grad():
        prob = torch.sigmoid(teacher(image, click_maps, prev)["instances"])
        if flip:
            mirrored = teacher(mirror_content(image, valid), mirror_content(click_maps, valid),
                               mirror_content(prev, valid))["instances"]
            prob = 0.5 * (prob + mirror_content(torch.sigmoid(mirrored), valid))
    return prob


def distill_loss(logits: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean BCE of the student's logits to the teacher's probability over the pixels the main
    loss counts (not padding, not ignored)."""
    return SigmoidBCELoss()(logits, labels, target).mean()


def load_teacher(path: str, device: torch.device) -> torch.nn.Module:
    """The frozen teacher (eval mode, no gradients)."""
    teacher, _ = load_checkpoint(path, map_location=device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


# ------------------------------------------------------------------------------ validation
@dataclass(frozen=True)
class ValResult:
    noc85: float
    noc90: float
    failures90: int
    miou_at_1: float
    num_samples: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def validate(net: torch.nn.Module, objects: list[ObjectRef], size: int, max_clicks: int,
             device: torch.device) -> ValResult:
    """NoC@85/90 through the same ``Session`` and protocol runner as ``clickmask eval``.

    Each run stops once IoU reaches 0.90 (NoC@85 and NoC@90 are known by then); the scoring
    rule (a run that never reaches the target counts as ``max_clicks``, and fails) is the
    runner's. Only the arithmetic differs from eval: FP32 torch instead of ONNX Runtime.
    """
    was_training = net.training
    net.eval()
    predictor = TorchPredictor(net, size, device)
    start = time.perf_counter()
    runs = [evaluate_sample(predictor, obj, max_clicks, stop_iou=0.90) for obj in objects]
    net.train(was_training)
    return ValResult(
        noc85=float(np.mean([r.noc(0.85) for r in runs])), noc90=float(np.mean([r.noc(0.90) for r in runs])),
        failures90=int(sum(r.failed(0.90) for r in runs)),
        miou_at_1=float(np.mean([r.iou_at(1) for r in runs])) if runs else 0.0,
        num_samples=len(runs), seconds=time.perf_counter() - start,
    )


# ------------------------------------------------------------------------------ schedule
def lr_factor(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup_iters and step < cfg.warmup_iters:
        return (step + 1) / cfg.warmup_iters
    if not cfg.cosine:
        return 1.0
    span = max(1, cfg.iters - cfg.warmup_iters)
    progress = min(1.0, (step - cfg.warmup_iters) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _param_groups(net: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    backbone = [p for n, p in net.named_parameters() if n.startswith("backbone.")]
    rest = [p for n, p in net.named_parameters() if not n.startswith("backbone.")]
    return [{"params": backbone, "lr_mult": cfg.backbone_lr_mult}, {"params": rest, "lr_mult": 1.0}]


# ------------------------------------------------------------------------------ training
@dataclass(frozen=True)
class TrainResult:
    output: str
    steps: int
    best_noc90: float | None
    best_step: int | None
    last_loss: float | None

    def __str__(self) -> str:
        best = "n/a" if self.best_noc90 is None else f"{self.best_noc90:.2f} at step {self.best_step}"
        return f"training finished: {self.steps} steps, best validation NoC@90 {best}; outputs in {self.output}"


def _model_config(cfg: TrainConfig, **extra: Any) -> dict[str, Any]:
    return {"network": cfg.network, "input_size": cfg.input_size, "network_kwargs": {},
            "train": cfg.to_dict(), **extra}


def _build_for_training(cfg: TrainConfig, weights_follow: bool) -> torch.nn.Module:
    """The network to train; when its weights come from a checkpoint next (``--init-from``,
    ``--resume``) the ImageNet encoder weights are not loaded, so their package is not needed."""
    kwargs = {}
    if weights_follow and "pretrained_encoder" in inspect.signature(NETWORKS[cfg.network]).parameters:
        kwargs["pretrained_encoder"] = False
    return build_network(cfg.network, **kwargs)


def _resolve_config(overrides: dict[str, Any], resume: bool) -> TrainConfig:
    """Defaults (or, with ``resume``, the run's recorded config.json) updated by ``overrides``."""
    base = TrainConfig().to_dict()
    if resume:
        recorded = Path(overrides.get("output", base["output"])) / CONFIG_FILE
        if not recorded.is_file():
            raise FileNotFoundError(f"--resume: {recorded} not found")
        base = json.loads(recorded.read_text())
    cfg = TrainConfig.from_dict({**base, **overrides})
    forbidden = sorted(set(cfg.train_sets) & EVALUATION_ONLY_SETS)
    if forbidden:
        raise ValueError(f"{forbidden} are evaluation-only sets: never train, tune or select on them")
    if cfg.crop_size % 32 or cfg.input_size % 32:
        raise ValueError("crop_size and input_size must be multiples of 32")
    return cfg


def train(overrides: dict[str, Any] | None = None, resume: bool = False, progress: bool = True) -> TrainResult:
    """Run (or resume) training; ``overrides`` are :class:`TrainConfig` fields."""
    started = time.monotonic()  # --max-minutes counts from here, set-up included
    cfg = _resolve_config(dict(overrides or {}), resume)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(1)
    torch.manual_seed(cfg.seed)

    train_objs, val_objs = load_split(cfg)
    sets = parse_set_weights(cfg.set_weights, train_objs)
    part_sets = part_set_names(cfg)  # a wrong name fails here, before any training step
    if part_sets:
        log.info("part sets (always a negative click next to the object): %s", ", ".join(sorted(part_sets)))
    if cfg.hard_from:
        sets = hard_sampling(cfg, train_objs, sets, out, progress)
    log.info("training on %d objects from %s; validating on %d held-out objects; device %s",
             len(train_objs), ", ".join(cfg.train_sets), len(val_objs), device)
    (out / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (out / "split.json").write_text(json.dumps({"val": [f"{o.dataset}/{o.sample_id}#{o.instance_id}"
                                                        for o in val_objs]}, indent=1) + "\n")

    weights_follow = (bool(cfg.init_from) and not resume) or (resume and (out / LAST_CHECKPOINT).is_file())
    net = _build_for_training(cfg, weights_follow).to(device)
    groups = _param_groups(net, cfg)
    optimizer = torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    criterion = RITMLoss(cfg.nfl_alpha, cfg.nfl_gamma, cfg.aux_weight)
    teacher = load_teacher(cfg.distill_from, device) if cfg.distill_from else None
    if teacher is not None:
        log.info("distillation from %s (weight %g, flip %s)", cfg.distill_from, cfg.distill_weight, cfg.distill_flip)

    step, best_noc90, best_step = 0, None, None
    if cfg.init_from and not resume:
        init_net, init_config = load_checkpoint(cfg.init_from, map_location=device)
        if init_config.get("network") != cfg.network:
            raise ValueError(f"--init-from {cfg.init_from} holds {init_config.get('network')!r}, not {cfg.network!r}")
        net.load_state_dict(init_net.state_dict())
        log.info("initialised from %s", cfg.init_from)
    if resume and (out / LAST_CHECKPOINT).is_file():
        ckpt = read_checkpoint(out / LAST_CHECKPOINT, map_location=device)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
        optimizer.load_state_dict(ckpt["optimizer"])
        step, best_noc90, best_step = int(ckpt["step"]), ckpt.get("best_noc90"), ckpt.get("best_step")
        log.info("resumed from %s at step %d", out / LAST_CHECKPOINT, step)

    def save_last() -> None:
        save_checkpoint(out / LAST_CHECKPOINT, net, _model_config(cfg, step=step), optimizer=optimizer.state_dict(),
                        step=step, best_noc90=best_noc90, best_step=best_step)

    metrics = (out / METRICS_FILE).open("a")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.iters, initial=step, dynamic_ncols=True, desc="train")
    last_save = time.monotonic()
    loss_ema = None
    last_noc = "-" if best_noc90 is None else f"{best_noc90:.2f}"
    net.train()
    backgrounds = list_backgrounds(cfg.data_root, cfg.backgrounds) if cfg.copy_paste > 0 else None
    batches = batch_stream(train_objs, cfg, sets, step, backgrounds)
    try:
        while step < cfg.iters:
            t0 = time.perf_counter()
            rng, batch = next(batches)
            image = _images(batch.samples).to(device)
            labels = _labels(batch.samples).to(device)
            rounds = int(rng.integers(0, cfg.max_extra_rounds + 1))
            click_maps, prev = iterative_clicks(net, image, batch, rounds, device, cfg.prev_mask_drop, rng)
            factor = lr_factor(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * factor * group["lr_mult"]
            outputs = net(image, click_maps, prev)
            losses = criterion(outputs, labels)
            if teacher is not None:
                valid = torch.from_numpy(np.stack([s.valid for s in batch.samples])).to(device)
                target = teacher_target(teacher, image, click_maps, prev, valid, cfg.distill_flip)
                losses["distill"] = distill_loss(outputs["instances"], target, labels)
                losses["loss"] = losses["loss"] + cfg.distill_weight * losses["distill"]
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            step += 1
            loss = float(losses["loss"].detach())
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {step}")
            loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
            if step % cfg.log_every == 0 or step == 1:
                record = {"step": step, "loss": loss, "loss_ema": loss_ema, "nfl": float(losses["nfl"]),
                          "aux_bce": float(losses["aux_bce"]), "lr": cfg.lr * factor, "rounds": rounds,
                          **({"distill": float(losses["distill"].detach())} if "distill" in losses else {}),
                          "seconds_per_step": time.perf_counter() - t0}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_ema:.4f}", noc90=last_noc, refresh=False)
            if cfg.snapshot_every and (step % cfg.snapshot_every == 0 or step == cfg.iters):
                save_checkpoint(out / f"step-{step:06d}.pt", net, _model_config(cfg, step=step), half=True)
            if cfg.val_every and val_objs and (step % cfg.val_every == 0 or step == cfg.iters):
                result = validate(net, val_objs, cfg.input_size, cfg.val_max_clicks, device)
                last_noc = f"{result.noc90:.2f}"
                metrics.write(json.dumps({"step": step, "val": result.to_dict()}) + "\n")
                metrics.flush()
                log.info("step %d: validation NoC@85 %.2f NoC@90 %.2f (failures %d/%d), IoU@1 %.3f, %.0f s",
                         step, result.noc85, result.noc90, result.failures90, result.num_samples,
                         result.miou_at_1, result.seconds)
                if best_noc90 is None or result.noc90 < best_noc90:
                    best_noc90, best_step = result.noc90, step
                    save_checkpoint(out / BEST_CHECKPOINT, net,
                                    _model_config(cfg, step=step, val=result.to_dict()), half=cfg.half_best)
                save_last()
                last_save = time.monotonic()
            elif time.monotonic() - last_save > 60 * cfg.checkpoint_minutes:
                save_last()
                last_save = time.monotonic()
            if cfg.max_minutes and time.monotonic() - started >= 60 * cfg.max_minutes:
                log.info("stopping at step %d: --max-minutes %g reached", step, cfg.max_minutes)
                break
    finally:
        batches.close()  # ends the DataLoader's worker processes
        if bar is not None:
            bar.close()
        metrics.close()
    save_last()
    return TrainResult(str(out), step, best_noc90, best_step, loss_ema)


def main(argv: list[str] | None = None) -> int:
    """``python -m clickmask.export.train`` (same options as ``clickmask train``)."""
    import argparse

    from .train_config import add_train_arguments, train_overrides

    parser = argparse.ArgumentParser(prog="python -m clickmask.export.train", description=__doc__.split("\n\n")[0])
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        print(train(train_overrides(args), resume=args.resume))
    except (FileNotFoundError, ValueError) as exc:
        print(f"clickmask train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
