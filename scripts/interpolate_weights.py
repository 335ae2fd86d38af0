"""Linear interpolation of two models' weights ("model soup"): ``(1 - alpha) * A + alpha * B``.

An ``alpha`` outside [0, 1] extrapolates, ``A + alpha * (B - A)``: with ``B`` the mean of two
models made from ``A``, ``alpha`` 2 adds both their changes to ``A`` ("task arithmetic").

How the shipped defaults were made (docs/experiments.md): a fine-tune's last and EMA weights
averaged, then averaged with the model it started from (the current ``default``: such a half
of a fine-tune of ``default-v4``; ``default-v4`` is ``default-v3`` plus the changes of two such
halves, of two fine-tunes of ``default-v3``). Both
models must have one configuration; the result carries no degradation readout (refit it:
``baryir fit-readout``). Float32 arithmetic, so a rerun is bit for bit.

    python scripts/interpolate_weights.py RUN/model.safetensors RUN/model_ema.safetensors -o soup.safetensors
    python scripts/interpolate_weights.py default-v2 soup.safetensors --alpha 0.5 -o interpolated.safetensors
    python scripts/interpolate_weights.py half1.safetensors half2.safetensors --alpha 0.5 -o mean.safetensors
    python scripts/interpolate_weights.py default-v3 mean.safetensors --alpha 2 -o both.safetensors
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from baryir.checkpoints import build_model, load_model, resolve_model_path, save_model
from baryir.io.atomic import refuse_overwriting_inputs
from baryir.model import BaryNet


def interpolate(a: BaryNet, b: BaryNet, alpha: float) -> BaryNet:
    """A copy of ``a`` with every floating-point tensor ``(1 - alpha) * a + alpha * b``; other
    tensors (counters) must be equal."""
    if a.config != b.config:
        raise ValueError(f"the models have different configs ({a.config.name} vs {b.config.name}); no interpolation")
    sb = b.state_dict()
    state = {}
    for name, v in a.state_dict().items():
        if v.is_floating_point():
            state[name] = (v.float() * (1 - alpha) + sb[name].float() * alpha).to(v.dtype)
        elif torch.equal(v, sb[name]):
            state[name] = v
        else:
            raise ValueError(f"{name} is not a float tensor and differs between the models")
    out = build_model(a.config).eval()  # no readout: it was fitted on other weights
    out.load_state_dict(state)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", help="shipped name or weights file (alpha 0)")
    ap.add_argument("b", help="shipped name or weights file (alpha 1)")
    ap.add_argument(
        "--alpha", type=float, default=0.5, help="weight of B (default 0.5); outside [0, 1] it extrapolates from A"
    )
    ap.add_argument("-o", "--output", required=True, type=Path, help="the new .safetensors file")
    args = ap.parse_args(argv)
    if not math.isfinite(args.alpha):
        raise SystemExit(f"error: --alpha {args.alpha} is not a number")
    try:
        paths = [resolve_model_path(m) for m in (args.a, args.b)]
        refuse_overwriting_inputs(paths, [args.output])
        mixed = interpolate(load_model(paths[0]), load_model(paths[1]), args.alpha)
        meta = {"interpolation": {"a": paths[0].name, "b": paths[1].name, "alpha": args.alpha}}
        save_model(mixed, args.output, meta)
    except (OSError, ValueError) as e:  # a missing or foreign file, an output that is an input
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {args.output}: {1 - args.alpha:g} x {paths[0].name} + {args.alpha:g} x {paths[1].name}")


if __name__ == "__main__":
    main()
