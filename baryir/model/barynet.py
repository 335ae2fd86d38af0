"""BaryNet: the BaryIR restoration network (encoder, barycenter map, two-stream decoder).

Layer names follow the published ``model_bary.BaryNet(decoder=True)`` so a published state
dict loads as is. The six modules the published class creates but never calls
(``chnl_reduce1..3``, ``reduce_noise_channel_1..3``) are not built; loaders drop them.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Downsample, LayerNorm, OverlapPatchEmbed, TransformerBlock, Upsample, transformer_stack
from .configs import BaryConfig
from .readout import LATENTS, DegradationReadout

#: Published parameters that exist in the checkpoints but not in this model (never used).
UNUSED_PUBLISHED_PREFIXES = (
    "chnl_reduce1.",
    "chnl_reduce2.",
    "chnl_reduce3.",
    "reduce_noise_channel_1.",
    "reduce_noise_channel_2.",
    "reduce_noise_channel_3.",
)

#: Weight of the residual stream in every decoder skip join (``skip + 0.8 * residual``).
RESIDUAL_JOIN = 0.8

BaryOutputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


#: What ``BaryNet.forward`` returns beside (or instead of) the restored image.
DEGRADATION_MODES = ("none", "also", "only", "latents")


class BaryNet(nn.Module):
    """All-in-one restoration network with a learned Wasserstein-barycenter latent.

    ``forward(x)`` returns the restored image in eval mode and
    ``(restored, source_latent, bary_latent, residual)`` in training mode;
    ``return_latents`` overrides that choice (the exporters pass ``False``).
    Input: (B, C, H, W) with H and W multiples of 8.
    """

    #: The deployment rewrites (:mod:`.rewrites`) this instance has been through.
    rewrites: tuple[str, ...] = ()
    #: The degradation readout fitted on these weights, if any (kept out of the state dict).
    readout: DegradationReadout | None = None
    #: Why a readout stored with the weights was not loaded (fitted on other weights, ...).
    readout_refused: str | None = None

    def __init__(self, config: BaryConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or BaryConfig()
        nb, h = cfg.num_blocks, cfg.heads
        w1, w2, w3, w4 = cfg.level_widths  # published: dim, 2 dim, 4 dim, 8 dim

        def stack(n: int, width: int, heads: int) -> nn.Sequential:
            return transformer_stack(n, width, heads, cfg.ffn_expansion_factor, cfg.bias, cfg.norm_type)

        def block(width: int, heads: int) -> TransformerBlock:
            return TransformerBlock(width, heads, cfg.ffn_expansion_factor, cfg.bias, cfg.norm_type)

        def conv1x1(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=1, bias=cfg.bias)

        # Encoder.
        self.patch_embed = OverlapPatchEmbed(cfg.inp_channels, w1)
        self.encoder_level1 = stack(nb[0], w1, h[0])
        self.down1_2 = Downsample(w1, w2)
        self.encoder_level2 = stack(nb[1], w2, h[1])
        self.down2_3 = Downsample(w2, w3)
        self.encoder_level3 = stack(nb[2], w3, h[2])
        self.down3_4 = Downsample(w3, w4)
        self.latent = stack(nb[3], w4, h[3])
        # Barycenter map and the LayerNorm shared by source and barycenter latents.
        self.barylatent = stack(cfg.bary_blocks, w4, h[3])
        self.LN = LayerNorm(w4, cfg.norm_type)
        # Barycenter stream of the decoder (fed with [bary, residual]).
        self.noise_level3 = block(2 * w4, h[2])
        self.reduce_noise_level3 = conv1x1(2 * w4, w3)
        self.up4_3 = Upsample(w3, w2)
        self.reduce_chan_level3 = conv1x1(w2 + w3, w3)
        self.decoder_level3 = stack(nb[2], w3, h[2])
        self.noise_level2 = block(w3, h[2])
        self.reduce_noise_level2 = conv1x1(w3, w3)
        self.up3_2 = Upsample(w3, w2)
        self.reduce_chan_level2 = conv1x1(2 * w2, w2)
        self.decoder_level2 = stack(nb[1], w2, h[1])
        self.noise_level1 = block(w2, h[2])
        self.reduce_noise_level1 = conv1x1(w2, w2)
        self.up2_1 = Upsample(w2, w1)
        self.decoder_level1 = stack(nb[0], 2 * w1, h[0])
        self.refinement = stack(cfg.num_refinement_blocks, 2 * w1, h[0])
        self.output = nn.Conv2d(2 * w1, cfg.out_channels, kernel_size=3, padding=1, bias=cfg.bias)
        # Residual (degradation-specific) stream.
        self.resreduce_noise_level3 = conv1x1(w4, w4)
        self.resup4_3 = Upsample(w4, w3)
        self.resreduce_chan_level3 = conv1x1(w3, w3)
        self.resdecoder_level3 = stack(nb[2], w3, h[2])
        self.resreduce_noise_level2 = conv1x1(w3, w3)
        self.resup3_2 = Upsample(w3, w2)
        self.resreduce_chan_level2 = conv1x1(w2, w2)
        self.resdecoder_level2 = stack(nb[1], w2, h[1])
        self.resreduce_noise_level1 = conv1x1(w2, w2)
        self.resup2_1 = Upsample(w2, w1)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Encoder skips, the source latent and its barycenter image (both LayerNormed)."""
        enc1, enc2, enc3 = self.encode_skips(x)
        source = self.LN(self.latent(self.down3_4(enc3)))
        bary = self.LN(self.barylatent(source))
        return [enc1, enc2, enc3], source, bary

    def encode_skips(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder's outputs at full, 1/2 and 1/4 resolution."""
        enc1 = self.encoder_level1(self.patch_embed(x))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        return enc1, enc2, self.encoder_level3(self.down2_3(enc2))

    def latents(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """The named latents of ``x`` (:data:`.readout.LATENTS`), running only as much of the
        encoder as they need (the skips alone stop before the 1/8 latent)."""
        if set(names) <= {"enc1", "enc2", "enc3"}:
            return dict(zip(("enc1", "enc2", "enc3"), self.encode_skips(x)))
        skips, source, bary = self.encode(x)
        return named_latents(skips, source, bary, source - bary)

    def fitted_readout(self) -> DegradationReadout:
        """The readout, or a ValueError saying why there is none (never fitted, or refused)."""
        if self.readout is None:
            raise ValueError(
                self.readout_refused or "this model has no degradation readout; fit one with `baryir fit-readout`"
            )
        return self.readout

    def analyze(self, x: torch.Tensor) -> torch.Tensor:
        """(B, classes) degradation probabilities of ``x`` from the encoder and the readout."""
        readout = self.fitted_readout()
        return readout(self.latents(x, readout.latents))

    def decode(self, skips: list[torch.Tensor], bary: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Two-stream decoder: the residual stream joins each skip as ``skip + 0.8 * r``."""
        enc1, enc2, enc3 = skips
        lat = self.reduce_noise_level3(self.noise_level3(torch.cat([bary, residual], 1)))
        r = self.resup4_3(self.resreduce_noise_level3(residual))
        dec = self.reduce_chan_level3(torch.cat([self.up4_3(lat), enc3 + RESIDUAL_JOIN * r], 1))
        dec = self.reduce_noise_level2(self.noise_level2(self.decoder_level3(dec)))
        r = self.resreduce_noise_level2(self.resdecoder_level3(self.resreduce_chan_level3(r)))

        r = self.resup3_2(r)
        dec = self.reduce_chan_level2(torch.cat([self.up3_2(dec), enc2 + RESIDUAL_JOIN * r], 1))
        dec = self.reduce_noise_level1(self.noise_level1(self.decoder_level2(dec)))
        r = self.resreduce_noise_level1(self.resdecoder_level2(self.resreduce_chan_level2(r)))

        r = self.resup2_1(r)
        dec = self.decoder_level1(torch.cat([self.up2_1(dec), enc1 + RESIDUAL_JOIN * r], 1))
        return self.output(self.refinement(dec))

    def _restore(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The restored image and every named latent of the one pass that made it."""
        skips, source, bary = self.encode(x)
        residual = source - bary
        restored = self.decode(skips, bary, residual) + x
        return restored, named_latents(skips, source, bary, residual)

    def restore_and_analyze(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The restored image and the degradation probabilities from one encoder pass."""
        readout = self.fitted_readout()
        restored, latents = self._restore(x)
        return restored, readout(latents)

    def forward(
        self, x: torch.Tensor, return_latents: bool | None = None, degradation: str = "none"
    ) -> torch.Tensor | BaryOutputs | tuple[torch.Tensor, torch.Tensor]:
        """``degradation`` "also" returns (restored, probabilities), "only" the probabilities (the
        encoder as far as the readout reads), "latents" every named latent of the encoder (what
        a readout is fitted on). Deployment graphs, runners and readout fitting go through here,
        not through ``restore_and_analyze``/``analyze``/``latents``: a quantized model's
        quantizers hook ``forward`` only."""
        if degradation not in DEGRADATION_MODES:
            raise ValueError(f"degradation must be {', '.join(DEGRADATION_MODES)}, not {degradation!r}")
        if degradation == "latents":
            return self.latents(x, LATENTS)
        if degradation == "only":
            return self.analyze(x)
        if degradation == "also":
            return self.restore_and_analyze(x)
        restored, latents = self._restore(x)
        if self.training if return_latents is None else return_latents:
            return restored, latents["source"], latents["bary"], latents["residual"]
        return restored


def named_latents(
    skips: list[torch.Tensor], source: torch.Tensor, bary: torch.Tensor, residual: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The encoder's latents by name (:data:`.readout.LATENTS`)."""
    enc1, enc2, enc3 = skips
    return {"enc1": enc1, "enc2": enc2, "enc3": enc3, "source": source, "bary": bary, "residual": residual}
