"""The deployment graph every exporter traces: image in, restored image out.

``image``: (N, 3, H, W) RGB in [0, 1], H and W multiples of 8 (runners pad). ``restored``:
the same layout, clamped to [0, 1] (or scaled to [0, 255] for CoreML image outputs). A model
with a degradation readout has a second output, ``degradation``: (N, classes) probabilities
from the same encoder pass (FP32 statistics whatever the compute precision).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from baryir.model import BaryNet
from baryir.model.rewrites import apply_rewrites


class DeploymentModel(nn.Module):
    """BaryNet in deployment mode with the output clamp (and optional 0-255 scale) fused in.

    Inputs and outputs stay float32; with ``compute_dtype=torch.float16`` the network's weights
    are half and the graph casts at its boundaries (the FP32 islands inside the blocks stay).
    ``rewrites`` names exact deployment rewrites (:data:`.rewrites.REWRITES`) applied to a copy.
    """

    def __init__(
        self,
        model: BaryNet,
        output_scale: float = 1.0,
        compute_dtype: torch.dtype = torch.float32,
        rewrites: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        model = apply_rewrites(model, rewrites)
        self.model = copy.deepcopy(model).to(compute_dtype).eval() if compute_dtype != torch.float32 else model.eval()
        self.output_scale = output_scale
        self.compute_dtype = compute_dtype

    @property
    def analyzes(self) -> bool:
        """Whether the graph has the second output, ``degradation``."""
        return self.model.readout is not None

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = image.to(self.compute_dtype) if self.compute_dtype != torch.float32 else image
        if self.analyzes:
            restored, degradation = self.model(x, degradation="also")  # forward: quantizers hook it
        else:
            restored = self.model(x, return_latents=False)
        restored = restored.clamp(0, 1)
        if self.compute_dtype != torch.float32:
            restored = restored.float()
        if self.output_scale != 1.0:
            restored = restored * self.output_scale
        return (restored, degradation) if self.analyzes else restored


class AnalysisModel(nn.Module):
    """A deployment model's encoder, only as far as its readout reads, and the readout: image in,
    ``degradation`` out (what ``analyze`` runs where a runtime cannot skip the decoder)."""

    def __init__(self, deployment: DeploymentModel) -> None:
        super().__init__()
        self.model, self.compute_dtype = deployment.model, deployment.compute_dtype

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(self.compute_dtype) if self.compute_dtype != torch.float32 else image
        return self.model(x, degradation="only")


@torch.no_grad()
def reference_outputs(model: BaryNet, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The PyTorch FP32 outputs every artifact is validated against: (restored, degradation or None)."""
    out = DeploymentModel(model)(image.float())
    return (out[0], out[1]) if isinstance(out, tuple) else (out, None)
