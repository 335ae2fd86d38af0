"""The deployment graph every exporter traces: image in, restored image out.

``image``: (N, 3, H, W) RGB in [0, 1], H and W multiples of 8 (runners pad). ``restored``:
the same layout, clamped to [0, 1] (or scaled to [0, 255] for CoreML image outputs).
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

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(self.compute_dtype) if self.compute_dtype != torch.float32 else image
        restored = self.model(x, return_latents=False).clamp(0, 1)
        if self.compute_dtype != torch.float32:
            restored = restored.float()
        return restored * self.output_scale if self.output_scale != 1.0 else restored


@torch.no_grad()
def reference_output(model: BaryNet, image: torch.Tensor) -> torch.Tensor:
    """The PyTorch FP32 output every artifact is validated against."""
    return DeploymentModel(model)(image.float())
