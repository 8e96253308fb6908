"""Losses: Normalized Focal Loss against a hand computation, BCE, ignore label."""

import math

import pytest
import torch

from clickmask.export.losses import IGNORE_LABEL, NormalizedFocalLoss, RITMLoss, SigmoidBCELoss


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_normalized_focal_loss_matches_hand_computation():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 3.0]]]])
    labels = torch.tensor([[[[1.0, 0.0], [0.0, IGNORE_LABEL]]]])
    alpha, gamma = 0.5, 2.0
    # valid pixels: (0,0) object, (0,1) background, (1,0) background; (1,1) ignored
    pts = [_sigmoid(2.0), 1 - _sigmoid(-1.0), 1 - _sigmoid(0.5)]
    alphas = [alpha, 1 - alpha, 1 - alpha]
    betas = [(1 - pt) ** gamma for pt in pts]
    mult = 3 / sum(betas)  # valid count / sum of focal weights (ignored pixel has weight 0)
    expected = -sum(a * b * mult * math.log(pt) for a, b, pt in zip(alphas, betas, pts)) / 3
    got = NormalizedFocalLoss(alpha, gamma)(logits, labels)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_normalization_factor_is_detached_and_gradient_flows():
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    labels = (torch.rand(2, 1, 8, 8) > 0.5).float()
    NormalizedFocalLoss()(logits, labels).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_bce_ignores_ignored_pixels():
    logits = torch.tensor([[[[0.0, 100.0]]]])
    labels = torch.tensor([[[[1.0, IGNORE_LABEL]]]])
    assert SigmoidBCELoss()(logits, labels).item() == pytest.approx(math.log(2), rel=1e-6)


def test_ritm_loss_adds_weighted_aux_bce():
    torch.manual_seed(0)
    out = {"instances": torch.randn(2, 1, 8, 8), "instances_aux": torch.randn(2, 1, 8, 8)}
    labels = (torch.rand(2, 1, 8, 8) > 0.5).float()
    losses = RITMLoss(aux_weight=0.4)(out, labels)
    expected = NormalizedFocalLoss()(out["instances"], labels).mean() + 0.4 * SigmoidBCELoss()(out["instances_aux"], labels).mean()
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
