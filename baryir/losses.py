"""BaryIR's barycenter losses, vectorised over the batch.

Per-sample terms, exactly as the published training step (``trainer_bary.py``) computes
them with Python loops:

- latent RMSE: ``mean((source_i - bary_i)**2) ** 0.5``;
- orthogonality: ``sum_j <n(bary_i), n(residual_j)>**2`` (n: flatten, L2-normalise);
- contrastive: ``-log(pos / (pos + neg))`` over ``exp(<n(res_i), n(res_j)> / 0.07)``, pos over
  the same degradation id (j = i included), neg over the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .options import BaryLossWeights

CONTRASTIVE_TEMPERATURE = 0.07


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.flatten(1), dim=1)


def latent_rmse(source: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Per-sample RMSE between source latents and their barycenter images, shape (B,)."""
    return (source - bary).flatten(1).pow(2).mean(dim=1).sqrt()


def orthogonality(bary: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Per-sample sum over the batch of squared cosines between bary_i and residual_j."""
    return (_unit_rows(bary) @ _unit_rows(residual).T).pow(2).sum(dim=1)


def contrastive(residual: torch.Tensor, degradation_ids: torch.Tensor) -> torch.Tensor:
    """Per-sample InfoNCE of residuals: same degradation id positive, others negative."""
    z = _unit_rows(residual)
    logits = (z @ z.T) / CONTRASTIVE_TEMPERATURE
    same = degradation_ids[:, None] == degradation_ids[None, :]
    # -log(pos / (pos + neg)) = logsumexp(all) - logsumexp(positives): no overflow.
    positives = logits.masked_fill(~same, float("-inf"))
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(positives, dim=1)


def bary_terms(
    source: torch.Tensor, bary: torch.Tensor, residual: torch.Tensor, degradation_ids: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The three per-sample terms as a dict of (B,) tensors."""
    return {
        "latent_rmse": latent_rmse(source, bary),
        "orthogonality": orthogonality(bary, residual),
        "contrastive": contrastive(residual, degradation_ids),
    }


def model_loss(
    restored: torch.Tensor,
    target: torch.Tensor,
    terms: dict[str, torch.Tensor],
    potential_values: torch.Tensor,
    source_weights: torch.Tensor,
    weights: BaryLossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The model step: l1 * L1 + mean_i lambda_i (rmse + s (orth + contra) - f_k(i)(bary_i)).

    ``potential_values`` is f_k(i)(bary_i) per sample and ``source_weights`` lambda_k(i).
    """
    l1 = (restored - target).abs().mean()
    per_sample = (
        terms["latent_rmse"] + weights.structure * (terms["orthogonality"] + terms["contrastive"]) - potential_values
    )
    bary = (source_weights * per_sample).mean()
    total = weights.l1 * l1 + bary
    logs = {"l1": l1.item(), "bary": bary.item(), **{k: v.mean().item() for k, v in terms.items()}}
    return total, logs


def potentials_loss(
    all_values: torch.Tensor,
    source_index: torch.Tensor,
    source_weights: torch.Tensor,
    lambdas: torch.Tensor,
    weights: BaryLossWeights,
) -> torch.Tensor:
    """The potentials step on detached barycenter latents.

    ``all_values`` is f_k(bary_i) for every k, shape (B, K). The potentials minimise
    mean_i lambda_i f_k(i)(bary_i) (the model maximises it) plus the congruence penalty
    ``congruence * (sum_k lambda_k f_k(bary_i))**2``, averaged over the batch (the published
    step applies it to the batch's last sample in a second optimiser step).
    """
    own = all_values.gather(1, source_index[:, None]).squeeze(1)
    congruence = (all_values @ lambdas).pow(2).mean()
    return (source_weights * own).mean() + weights.congruence * congruence
