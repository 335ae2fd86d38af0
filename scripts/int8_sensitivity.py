r"""Which quantizers cost quality: PSNR regained by leaving one group of quantizers in float.

Loads a quantized checkpoint (NNCF's fake-quantized PyTorch model), restores synthetic test
crops with every quantizer on, then once per group with that group's quantizers disabled, and
ranks the groups by the PSNR they cost. Groups: each top-level module's weight quantizers
and its activation quantizers, plus the named regex groups given with ``--group``. This is
how the default ignored scope (``quantize.scheme``) was chosen; confirm a candidate scope
through the real INT8 runtimes with ``scripts/int8_report.py``.

    python scripts/int8_sensitivity.py --model out/q/ptq/model-int8.safetensors \
        --clean data/test/CBSD68 --tasks denoise_15 denoise_25 --limit 3 \
        --group 'residual adds=pre_hooks\..*/\d+/add/\d+__' --json out/sensitivity.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

import torch

from baryir.checkpoints import load_model
from baryir.evaluate import synthetic_items
from baryir.metrics import psnr
from baryir.quantize.checkpoint import load_quantized, read_header
from baryir.quantize.scheme import quantizers


def group_quantizers(model, extra: dict[str, str]) -> dict[str, list]:
    """Quantizer modules by ``<top-level module>:weights|activations`` and by ``extra`` regexes."""
    groups: dict[str, list] = defaultdict(list)
    for name, q in quantizers(model):
        node = name.split(".", 2)[-1]  # drop NNCF's "__nncf_hooks.pre_hooks." prefix
        kind = "weights" if re.search(r"conv2d/\d+__1\.", node) else "activations"
        groups[f"{node.split('/')[0]}:{kind}"].append(q)
        for label, pattern in extra.items():
            if re.search(pattern, name):
                groups[label].append(q)
    return dict(groups)


def mean_psnr(model, crops: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean PSNR of ``model``'s restorations of the (degraded, target) crops."""
    with torch.no_grad():
        return sum(psnr(model(x).clamp(0, 1), y) for x, y in crops) / len(crops)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="quantized checkpoint (or a shipped name)")
    ap.add_argument("--fp32", help="its float model, for reference (default: the checkpoint's source)")
    ap.add_argument("--clean", required=True, help="clean photos to degrade")
    ap.add_argument("--tasks", nargs="+", default=["denoise_15", "denoise_25"])
    ap.add_argument("--limit", type=int, default=3, help="photos per task")
    ap.add_argument("--crop", type=int, nargs=2, default=(192, 256), metavar=("H", "W"))
    ap.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="LABEL=REGEX",
        help="an extra group: quantizers whose name matches REGEX (repeatable)",
    )
    ap.add_argument("--json")
    args = ap.parse_args()

    h, w = args.crop
    crops = [
        (it.degraded[None, :, :h, :w], it.target[None, :, :h, :w])
        for it in synthetic_items(args.clean, args.tasks, limit=args.limit)
    ]
    quantized = load_quantized(args.model)
    fp32 = load_model(args.fp32 or read_header(args.model)["source"]).eval()
    base = {"fp32": mean_psnr(fp32, crops), "int8": mean_psnr(quantized, crops)}
    groups = group_quantizers(quantized, dict(spec.split("=", 1) for spec in args.group))
    rows = []
    for label, members in groups.items():
        for q in members:
            q.disable_quantization()
        rows.append({"group": label, "quantizers": len(members), "gain_db": mean_psnr(quantized, crops) - base["int8"]})
        for q in members:
            q.enable_quantization()
    rows.sort(key=lambda r: -r["gain_db"])
    print(f"FP32 {base['fp32']:.3f} dB, INT8 {base['int8']:.3f} dB (fake-quantized PyTorch, {len(crops)} crops)")
    print("| group | quantizers | PSNR regained in float |\n|---|---:|---:|")
    for r in rows:
        print(f"| {r['group']} | {r['quantizers']} | {r['gain_db']:+.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "tasks": args.tasks, "base": base, "groups": rows}, f, indent=2)


if __name__ == "__main__":
    main()
