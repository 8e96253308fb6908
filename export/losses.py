"""RITM's losses: Normalized Focal Loss (sigmoid) and binary cross-entropy, with an ignore label.

Both take logits ``[B, 1, H, W]`` and labels ``[B, 1, H, W]`` with 1 object, 0 background and
``IGNORE_LABEL`` (-1) for pixels that do not count (zero padding, GrabCut-style bands), and
return one loss per sample ``[B]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_LABEL = -1


class NormalizedFocalLoss(nn.Module):
    """RITM's ``NormalizedFocalLossSigmoid`` (Sofiiuk et al., 2019/2021).

    The focal weights ``(1 - pt) ** gamma`` are rescaled per sample so they sum to the number
    of valid pixels (the rescaling factor is detached), so the loss keeps its magnitude as
    the prediction improves while still concentrating on the hard pixels::

        pt    = 1 - |label - p|                 (p = sigmoid(logit))
        beta  = (1 - pt) ** gamma * N_valid / (sum(beta) + eps)
        loss  = -sum(alpha_t * beta * log(min(pt + eps, 1))) / (N_valid + eps)

    with ``alpha_t = alpha`` on object pixels and ``1 - alpha`` on background.
    """

    def __init__(self, alpha: float = 0.5, gamma: float = 2.0, eps: float = 1e-12):
        super().__init__()
        self.alpha, self.gamma, self.eps = alpha, gamma, eps

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(logits)
        valid = (labels != IGNORE_LABEL).to(prob.dtype)
        positive = labels > 0.5
        alpha = torch.where(positive, self.alpha * valid, (1 - self.alpha) * valid)
        pt = torch.where(valid > 0, 1 - torch.abs(labels - prob), torch.ones_like(prob))
        beta = (1 - pt) ** self.gamma
        dims = tuple(range(1, logits.dim()))
        valid_sum = valid.sum(dim=dims, keepdim=True)
        beta_sum = beta.sum(dim=dims, keepdim=True)
        beta = beta * (valid_sum / (beta_sum + self.eps)).detach()
        loss = -alpha * beta * torch.log(torch.clamp(pt + self.eps, max=1.0))
        return (loss * valid).sum(dim=dims) / (valid.sum(dim=dims) + self.eps)


class SigmoidBCELoss(nn.Module):
    """Per-sample mean binary cross-entropy over valid pixels; against ``labels`` (object or not),
    or against a soft ``target`` in [0, 1] (a teacher's probability) on the pixels ``labels``
    marks valid."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        valid = (labels != IGNORE_LABEL).to(logits.dtype)
        if target is None:
            target = (labels > 0.5).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * valid
        dims = tuple(range(1, logits.dim()))
        return loss.sum(dim=dims) / valid.sum(dim=dims).clamp_min(1.0)


class RITMLoss(nn.Module):
    """``NFL(instances) + aux_weight * BCE(instances_aux)``, averaged over the batch."""

    def __init__(self, alpha: float = 0.5, gamma: float = 2.0, aux_weight: float = 0.4):
        super().__init__()
        self.nfl = NormalizedFocalLoss(alpha, gamma)
        self.bce = SigmoidBCELoss()
        self.aux_weight = aux_weight

    def forward(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        main = self.nfl(outputs["instances"], labels).mean()
        aux = self.bce(outputs["instances_aux"], labels).mean()
        return {"loss": main + self.aux_weight * aux, "nfl": main.detach(), "aux_bce": aux.detach()}
