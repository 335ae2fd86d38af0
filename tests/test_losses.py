"""The barycenter loss terms against the published training step's golden values."""

from __future__ import annotations

import numpy as np
import torch

from baryir.losses import BaryLossWeights, bary_terms, contrastive, model_loss, potentials_loss


def _golden(fixtures):
    g = np.load(fixtures / "bary_loss_golden.npz")
    source = torch.from_numpy(g["source_latent"])
    bary = torch.from_numpy(g["bary_latent"])
    return g, source, bary, torch.from_numpy(g["de_id"])


def test_per_sample_terms_match_published_loop(fixtures):
    g, source, bary, ids = _golden(fixtures)
    assert float(g["temperature"]) == 0.07
    terms = bary_terms(source, bary, source - bary, ids)
    got = torch.stack([terms[str(c)] for c in g["columns"]], dim=1).numpy()
    np.testing.assert_allclose(got, g["per_sample_terms"], atol=1e-9, rtol=0)


def test_contrastive_is_zero_only_without_negatives():
    residual = torch.randn(4, 8, 2, 2, dtype=torch.float64)
    assert torch.allclose(contrastive(residual, torch.zeros(4, dtype=torch.long)), torch.zeros(4, dtype=torch.float64))
    assert (contrastive(residual, torch.arange(4)) > 0).all()


def test_model_and_potentials_losses_pull_in_opposite_directions(fixtures):
    _, source, bary, ids = _golden(fixtures)
    bary = bary.clone().requires_grad_(True)
    terms = bary_terms(source, bary, source - bary, ids)
    f = bary.flatten(1).sum(1, keepdim=True).repeat(1, 3)  # a stand-in potential: f_k(b) = sum(b)
    src = torch.tensor([0, 0, 1, 2, 1, 0])
    lam = torch.tensor([0.2, 0.4, 0.4], dtype=torch.float64)
    weights = BaryLossWeights(l1=1.0)
    restored = torch.zeros(6, 3, 8, 8, dtype=torch.float64)
    total, logs = model_loss(restored, restored + 0.5, terms, f.gather(1, src[:, None])[:, 0], lam[src], weights)
    assert logs["l1"] == 0.5
    (g_model,) = torch.autograd.grad(total, bary, retain_graph=True)
    pots = potentials_loss(f, src, lam[src], lam, BaryLossWeights(congruence=0.0))
    (g_pots,) = torch.autograd.grad(pots, bary)
    # the potential term enters the model loss with a minus sign and the potentials' with a plus
    rmse_structure_free = g_model + g_pots
    assert not torch.allclose(g_model, torch.zeros_like(g_model))
    assert torch.allclose(
        rmse_structure_free,
        torch.autograd.grad(
            (lam[src] * (terms["latent_rmse"] + 0.05 * (terms["orthogonality"] + terms["contrastive"]))).mean(), bary
        )[0],
    )
