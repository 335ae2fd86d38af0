"""Whole-image inference helpers shared by evaluation, training validation and runners."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .formats import PAD_MULTIPLE  # BaryNet downsamples three times: inputs are padded to it here


def torch_device(name: str | torch.device) -> torch.device:
    """The torch device ``name`` if this machine has it; a ``ValueError`` naming the option otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this PyTorch ({torch.__version__}) sees no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: {device.type} is not supported here; use cpu or cuda")
    return device


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the bottom/right of (B, C, H, W) to a multiple; returns (padded, (H, W))."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`."""
    return x[..., : size[0], : size[1]]


@torch.no_grad()
def restore_tensor(model: torch.nn.Module, img: torch.Tensor) -> torch.Tensor:
    """Restore a (3, H, W) or (B, 3, H, W) float image of any size with an eager model; the
    result is float32 on ``img``'s device (a CUDA model restores CPU images for CPU metrics)."""
    batched = img.dim() == 4
    x = img if batched else img[None]
    param = next(model.parameters())
    padded, size = pad_to_multiple(x.to(param.device, param.dtype))
    out = crop_to(model(padded, return_latents=False), size).float().clamp(0, 1).to(img.device)
    return out if batched else out[0]
