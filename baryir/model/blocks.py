"""Restormer building blocks used by BaryNet, with the published layer names.

Every block is export-friendly: no Python integer is computed from a tensor shape inside
``forward`` and nothing branches on data, so one trace covers every height and width.

Precision policy (kept by every backend, see ``export/``):
- the channel LayerNorm statistics and the L2 normalisation of MDTA's queries and keys over
  H x W are computed in float32 whatever the input dtype (``as_float32``); at 2048 x 2048 a
  sum of squares over H x W overflows float16 (max 65504) otherwise;
- everything else (convolutions, the C x C attention map, softmax over C, GELU) runs in
  the input dtype. The attention map is a product of unit vectors, so it is bounded by 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-5
L2_EPS = 1e-12


def as_float32(x: torch.Tensor) -> torch.Tensor:
    """Upcast a half/bfloat16 tensor for a reduction; a no-op (no graph node) for float32."""
    return x if x.dtype == torch.float32 else x.float()


class BiasFreeLayerNorm(nn.Module):
    """Channel LayerNorm without mean subtraction in the output: x / sqrt(var + eps) * w."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = as_float32(x)
        var = xf.var(dim=1, keepdim=True, unbiased=False)
        out = xf * torch.rsqrt(var + LN_EPS) * self.weight[:, None, None].to(xf.dtype)
        return out.to(x.dtype)


class WithBiasLayerNorm(nn.Module):
    """Channel LayerNorm: (x - mean) / sqrt(var + eps) * w + b, over dim 1 of NCHW."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = as_float32(x)
        centred = xf - xf.mean(dim=1, keepdim=True)
        var = (centred * centred).mean(dim=1, keepdim=True)
        w = self.weight[:, None, None].to(xf.dtype)
        b = self.bias[:, None, None].to(xf.dtype)
        return (centred * torch.rsqrt(var + LN_EPS) * w + b).to(x.dtype)


class LayerNorm(nn.Module):
    """Per-pixel LayerNorm over channels; ``norm_type`` is ``WithBias`` or ``BiasFree``.

    The published code permutes to (B, HW, C) with einops; normalising over dim 1 of NCHW is
    the same arithmetic without shape arguments.
    """

    def __init__(self, channels: int, norm_type: str) -> None:
        super().__init__()
        if norm_type == "BiasFree":
            self.body: nn.Module = BiasFreeLayerNorm(channels)
        elif norm_type == "WithBias":
            self.body = WithBiasLayerNorm(channels)
        else:
            raise ValueError(f"norm_type must be 'WithBias' or 'BiasFree', got {norm_type!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FeedForward(nn.Module):
    """Gated-Dconv feed-forward network (GDFN)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


def l2_normalize_hw_fp32(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise (..., H, W) over H x W with the sum of squares in float32 (FP16-safe).

    The sum runs over W, then over H: ONNX Runtime's CPU ReduceL2 accumulates one running
    float32 sum, so over the 4 M elements of a 2048 x 2048 image its relative error is ~2e-3
    (measured), which moved FP32 exports 6.7e-4 away from PyTorch; two reductions of at most
    a few thousand terms each stay within 1e-4.
    """
    xf = as_float32(x)
    sum_sq = xf.square().sum(-1, keepdim=True).sum(-2, keepdim=True)
    # max(|x|, eps) as sqrt(max(sum, eps^2)): a finite gradient for an all-zero map
    return (xf / sum_sq.clamp_min(L2_EPS**2).sqrt()).to(x.dtype)


class Attention(nn.Module):
    """Multi-Dconv head transposed attention (MDTA): a C x C attention map per head."""

    def __init__(self, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"channels {dim} are not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        # (B, heads*c, H, W) -> (B, heads, c, H*W); -1 lets the trace keep H and W symbolic.
        q = l2_normalize_hw_fp32(q.unflatten(1, (self.num_heads, -1))).flatten(3)
        k = l2_normalize_hw_fp32(k.unflatten(1, (self.num_heads, -1))).flatten(3)
        v_heads = v.unflatten(1, (self.num_heads, -1)).flatten(3)
        attn = (q @ k.transpose(-2, -1)) * self.temperature.to(q.dtype)
        out = attn.softmax(dim=-1) @ v_heads
        return self.project_out(out.flatten(1, 2).reshape_as(v))


class TransformerBlock(nn.Module):
    """Pre-norm Restormer block: x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, norm_type: str) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, norm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, norm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def transformer_stack(
    n: int, dim: int, heads: int, ffn_expansion_factor: float, bias: bool, norm_type: str
) -> nn.Sequential:
    """``n`` TransformerBlocks in a Sequential (published names ``<stack>.<i>.<...>``)."""
    return nn.Sequential(*[TransformerBlock(dim, heads, ffn_expansion_factor, bias, norm_type) for _ in range(n)])


class OverlapPatchEmbed(nn.Module):
    """3x3 convolution from image to features."""

    def __init__(self, in_channels: int, embed_dim: int, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """Halve resolution: 3x3 conv to ``out/4`` channels then pixel-unshuffle by 2 (``out``
    defaults to 2C, the published doubling)."""

    def __init__(self, channels: int, out: int | None = None) -> None:
        super().__init__()
        out = 2 * channels if out is None else out
        self.body = nn.Sequential(
            nn.Conv2d(channels, out // 4, kernel_size=3, padding=1, bias=False),
            nn.PixelUnshuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """Double resolution: 3x3 conv to ``4·out`` channels then pixel-shuffle by 2 (``out``
    defaults to C/2, the published halving)."""

    def __init__(self, channels: int, out: int | None = None) -> None:
        super().__init__()
        out = channels // 2 if out is None else out
        self.body = nn.Sequential(
            nn.Conv2d(channels, 4 * out, kernel_size=3, padding=1, bias=False),
            nn.PixelShuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
