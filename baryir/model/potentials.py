"""Kantorovich potentials f_k, one per degradation source (training only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KantorovichPotential(nn.Sequential):
    """One potential: grouped strided conv, LeakyReLU, pool, flatten, Linear, Linear, LeakyReLU, Linear.

    Indices and names match the published ``nn.Sequential`` (0 conv, 3/4/6 linear). The
    published version flattens the conv output directly, which ties it to one patch size
    (latent side / 4 = ``pool``); an adaptive average pool to ``pool`` x ``pool`` makes it
    work for any patch size and is the identity at the published one.
    """

    def __init__(self, channels: int, pool: int, groups: int = 4) -> None:
        features = channels * pool * pool
        super().__init__(
            nn.Conv2d(channels, channels, kernel_size=4, stride=4, padding=1, groups=groups, bias=False),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(features, features // 4),
            nn.Linear(features // 4, 64),
            nn.LeakyReLU(0.2),
            nn.Linear(64, 1),
        )
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self[1](self[0](x))
        x = F.adaptive_avg_pool2d(x, self.pool)
        for layer in list(self)[2:]:
            x = layer(x)
        return x.squeeze(-1)


class Potentials(nn.Module):
    """The K potentials; ``forward(latents)`` returns f_k(latent_i) as a (B, K) tensor."""

    def __init__(self, num_potentials: int, channels: int, pool: int = 4, groups: int = 4) -> None:
        super().__init__()
        self.potentials = nn.ModuleList([KantorovichPotential(channels, pool, groups) for _ in range(num_potentials)])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.stack([f(latents) for f in self.potentials], dim=1)
