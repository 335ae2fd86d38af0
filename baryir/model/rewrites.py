"""Exact deployment rewrites of BaryNet, applied to a copy when exporting or quantizing.

The training graph and the float checkpoints stay as they are; each rewrite computes the same
numbers with operations the runtimes run faster, and the export's validation against the
unrewritten PyTorch model proves it (docs/benchmarks.md has the measurements). INT8 models are
quantized after the rewrite, so their quantizers sit on the rewritten graph (their checkpoints
record which rewrites they need).

``split_channel_chunks``: GDFN's ``chunk(2)`` and MDTA's ``chunk(3)`` split the output of a 1x1
convolution followed by a depthwise 3x3 along channels. Both convolutions compute each output
channel on its own, so one (1x1, depthwise) pair per chunk, with the weights sliced, gives the
same chunks with no split: OpenVINO runs a channel split at widths that are not a multiple of
its block size with a reference kernel, and ONNX exports it as shape arithmetic and Slices.

``conv_mean_norms``: the channel LayerNorm's two means as 1x1 convolutions with weights 1/C.

``conv_pixel_shuffles``: the pixel-unshuffle of each downsampling and the pixel-shuffle of each
upsampling as stride-2 grouped (transposed) convolutions with one-hot 2x2 weights. Each output is
one input times 1 plus zeros, so the result is bit for bit the same; the runtimes keep their
convolution layouts instead of a 6-D Transpose or a DepthToSpace with layout changes around it.

``token_attention``: MDTA (after ``split_channel_chunks``) on (B, H*W, C) tokens instead of
(B, heads, C/heads, H*W) planes, every head at once with a block-diagonal mask. OpenVINO runs an
int8 convolution's output in NHWC; the planar form copies q, k and v to NCHW before the
MatMuls, the token form reads them where they are. It changes only float computation between
an INT8 model's quantizers, so OpenVINO's INT8 export applies it to the quantized model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from baryir.formats import DEPLOYMENT_REWRITES

from .barynet import BaryNet
from .blocks import (
    L2_EPS,
    LN_EPS,
    Attention,
    Downsample,
    FeedForward,
    Upsample,
    WithBiasLayerNorm,
    as_float32,
    l2_normalize_hw_fp32,
)


def _slice_conv(conv: nn.Conv2d, start: int, stop: int) -> nn.Conv2d:
    """Output channels ``start:stop`` of a 1x1 or depthwise convolution, as a new convolution."""
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    if not depthwise and conv.groups != 1:
        raise ValueError(f"only dense or depthwise convolutions can be sliced, not groups={conv.groups}")
    width = stop - start
    part = nn.Conv2d(
        width if depthwise else conv.in_channels,
        width,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        groups=width if depthwise else 1,
        bias=conv.bias is not None,
    ).to(conv.weight.dtype)
    with torch.no_grad():
        part.weight.copy_(conv.weight[start:stop])
        if conv.bias is not None:
            part.bias.copy_(conv.bias[start:stop])
    return part


def _branches(pointwise: nn.Conv2d, depthwise: nn.Conv2d, chunks: int) -> nn.ModuleList:
    """One ``Sequential(1x1, depthwise)`` per chunk of ``depthwise(pointwise(x)).chunk(chunks, 1)``."""
    width = pointwise.out_channels // chunks
    return nn.ModuleList(
        nn.Sequential(
            _slice_conv(pointwise, i * width, (i + 1) * width), _slice_conv(depthwise, i * width, (i + 1) * width)
        )
        for i in range(chunks)
    )


class SplitFeedForward(nn.Module):
    """:class:`FeedForward` with its gate and value branches computed separately."""

    def __init__(self, ffn: FeedForward) -> None:
        super().__init__()
        self.gate, self.value = _branches(ffn.project_in, ffn.dwconv, 2)
        self.project_out = ffn.project_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_out(F.gelu(self.gate(x)) * self.value(x))


class SplitAttention(nn.Module):
    """:class:`Attention` with its query, key and value branches computed separately."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.num_heads = attn.num_heads
        self.temperature = attn.temperature
        self.q, self.k, self.v = _branches(attn.qkv, attn.qkv_dwconv, 3)
        self.project_out = attn.project_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v(x)
        q = l2_normalize_hw_fp32(self.q(x).unflatten(1, (self.num_heads, -1))).flatten(3)
        k = l2_normalize_hw_fp32(self.k(x).unflatten(1, (self.num_heads, -1))).flatten(3)
        attn = (q @ k.transpose(-2, -1)) * self.temperature.to(q.dtype)
        out = attn.softmax(dim=-1) @ v.unflatten(1, (self.num_heads, -1)).flatten(3)
        return self.project_out(out.flatten(1, 2).reshape_as(v))


_SPLITS = {FeedForward: SplitFeedForward, Attention: SplitAttention}


def _replaced(model: BaryNet, replacements: dict[type, Callable[[nn.Module], nn.Module]]) -> BaryNet:
    """A copy of ``model`` (eval mode) with every module of a type in ``replacements`` replaced."""
    rewritten = copy.deepcopy(model).eval()
    for module in list(rewritten.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) in replacements:
                setattr(module, child_name, replacements[type(child)](child))
    return rewritten


def split_channel_chunks(model: BaryNet) -> BaryNet:
    """A copy of ``model`` (eval mode) with every GDFN and MDTA split rewritten away."""
    return _replaced(model, _SPLITS)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C). The flatten right after the permute is what lets OpenVINO
    take an int8 convolution's NHWC output as these tokens without copying it."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def _l2_normalized_tokens(x: torch.Tensor) -> torch.Tensor:
    """``_tokens(x)`` L2-normalised over H x W, with :func:`l2_normalize_hw_fp32`'s float32 sums
    (over W, then over H, taken on ``x`` itself)."""
    xf = as_float32(x)
    sum_sq = xf.square().sum(-1).sum(-1)
    return (_tokens(xf) / sum_sq.clamp_min(L2_EPS**2).sqrt().unsqueeze(1)).to(x.dtype)


class TokenAttention(nn.Module):
    """:class:`SplitAttention` on (B, H*W, C) tokens: one C x C map for all heads, the pairs of
    channels from different heads masked out before the softmax (exactly zero after it)."""

    def __init__(self, attn: SplitAttention) -> None:
        super().__init__()
        self.num_heads, self.temperature = attn.num_heads, attn.temperature
        self.q, self.k, self.v, self.project_out = attn.q, attn.k, attn.v, attn.project_out
        channels = attn.project_out.in_channels
        self.head_channels = channels // attn.num_heads
        head = torch.arange(channels) // self.head_channels
        mask = torch.where(head[:, None] == head[None, :], 0.0, float("-inf"))
        self.register_buffer("head_mask", mask if attn.num_heads > 1 else None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.v(x)
        q, k = _l2_normalized_tokens(self.q(x)), _l2_normalized_tokens(self.k(x))
        temperature = self.temperature.reshape(-1, 1).repeat_interleave(self.head_channels, 0)
        attn = (q.transpose(1, 2) @ k) * temperature.to(q.dtype)
        if self.head_mask is not None:
            attn = attn + self.head_mask.to(attn.dtype)
        out = _tokens(v) @ attn.softmax(dim=-1).transpose(1, 2)
        # the last operation before project_out stays SplitAttention's reshape_as: NNCF attaches
        # an INT8 model's quantizer of project_out's input to it by that name
        return self.project_out(out.reshape_as(v.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


def token_attention(model: BaryNet) -> BaryNet:
    """A copy of ``model`` (eval mode) with every split MDTA (after ``split_channel_chunks``) on tokens."""
    if any(isinstance(m, Attention) for m in model.modules()):
        raise ValueError("token_attention rewrites split attention: apply split_channel_chunks first")
    return _replaced(model, {SplitAttention: TokenAttention})


class ConvMeanLayerNorm(nn.Module):
    """:class:`WithBiasLayerNorm` with its two channel means as 1x1 convolutions (weights 1/C),
    in NCHW: no reduction over a non-trailing axis and no layout change."""

    def __init__(self, norm: WithBiasLayerNorm) -> None:
        super().__init__()
        self.weight, self.bias = norm.weight, norm.bias
        self.register_buffer("mean_kernel", torch.full((1, norm.weight.numel(), 1, 1), 1.0 / norm.weight.numel()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = as_float32(x)
        kernel = self.mean_kernel.to(xf.dtype)
        centred = xf - F.conv2d(xf, kernel)
        var = F.conv2d(centred * centred, kernel)
        w, b = self.weight[:, None, None].to(xf.dtype), self.bias[:, None, None].to(xf.dtype)
        return (centred * torch.rsqrt(var + LN_EPS) * w + b).to(x.dtype)


def conv_mean_norms(model: BaryNet) -> BaryNet:
    """A copy of ``model`` (eval mode) with every channel LayerNorm's means as 1x1 convolutions."""
    return _replaced(model, {WithBiasLayerNorm: ConvMeanLayerNorm})


def _one_hot_shuffle_weight(channels: int) -> torch.Tensor:
    """(4C, 1, 2, 2) weights moving sub-pixel (i, j) of channel c to channel 4c + 2i + j (and back)."""
    return torch.eye(4).reshape(4, 1, 2, 2).repeat(channels, 1, 1, 1)


class ConvPixelShuffle(nn.Module):
    """``PixelShuffle(2)`` (or, with ``unshuffle``, ``PixelUnshuffle(2)``) of ``channels`` output
    (input) channels as a stride-2 grouped transposed (plain) convolution with one-hot weights:
    each output is one input times 1 plus zeros, so the result is exact."""

    def __init__(self, channels: int, unshuffle: bool) -> None:
        super().__init__()
        self.channels, self.unshuffle = channels, unshuffle
        self.register_buffer("weight", _one_hot_shuffle_weight(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d if self.unshuffle else F.conv_transpose2d
        return conv(x, self.weight.to(x.dtype), stride=2, groups=self.channels)


def conv_pixel_shuffles(model: BaryNet) -> BaryNet:
    """A copy of ``model`` (eval mode) with every pixel-(un)shuffle of the down- and upsamplings as
    a one-hot (transposed) convolution: no 6-D Reshape and Transpose, no DepthToSpace."""
    rewritten = copy.deepcopy(model).eval()
    for module in list(rewritten.modules()):
        if isinstance(module, Downsample):
            module.body[1] = ConvPixelShuffle(module.body[0].out_channels, unshuffle=True)
        elif isinstance(module, Upsample):
            module.body[1] = ConvPixelShuffle(module.body[0].out_channels // 4, unshuffle=False)
    return rewritten


#: Every rewrite by name (manifests and quantized checkpoints record the names of those applied).
REWRITES = {
    "split_channel_chunks": split_channel_chunks,
    "conv_mean_norms": conv_mean_norms,
    "conv_pixel_shuffles": conv_pixel_shuffles,
    "token_attention": token_attention,
}


__all__ = [
    "DEPLOYMENT_REWRITES",
    "REWRITES",
    "apply_rewrites",
    "conv_mean_norms",
    "conv_pixel_shuffles",
    "pending_rewrites",
    "split_channel_chunks",
    "token_attention",
]


#: Rewrites that rewrite what another one made, by the one they need first.
PREREQUISITES = {"token_attention": "split_channel_chunks"}


def pending_rewrites(model: BaryNet, names: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``names`` that ``model`` has not been through, in order, less any whose
    prerequisite it will not have (an INT8 model quantized on the training graph keeps its
    unsplit attention, so it takes no ``token_attention``)."""
    done, pending = list(model.rewrites), []
    for name in names:
        needs = PREREQUISITES.get(name)
        if name not in done and (needs is None or needs in done):
            done.append(name)
            pending.append(name)
    return tuple(pending)


def apply_rewrites(model: BaryNet, names: tuple[str, ...] | list[str]) -> BaryNet:
    """``model`` after the named rewrites (a copy if any; unknown names are an error)."""
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise ValueError(f"unknown rewrites {unknown} (known: {', '.join(REWRITES)}); update baryir")
    for name in names:
        done = model.rewrites
        model = REWRITES[name](model)
        model.rewrites = (*done, name)
    return model
