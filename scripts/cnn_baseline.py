"""A plain full-resolution CNN denoiser trained for a fixed wall-clock time: the yardstick the
training issue quotes for the default model's σ25 (a ~90 k-parameter CNN, minutes of CPU, noise
alone). Not a BaryIR model and not shipped: it puts the BaryNet numbers in docs/experiments.md in scale.

The network is ``x - body(x)`` with ``body`` = conv3x3(3→C), ReLU, N × [conv3x3(C→C), ReLU],
conv3x3(C→3) (C=48, N=4: 85.8 k parameters, as many multiply-adds per pixel). It trains with L1
on random 64² patches of the clean photos degraded by ``--tasks`` (the trainer's data pipeline),
AdamW at 1e-3 on a cosine over the elapsed share of ``--minutes``, bf16 autocast on the CPU,
then is evaluated as ``baryir eval --clean`` does (same per-image noise draws).

Usage: python scripts/cnn_baseline.py --data DIR [DIR ...] --clean CBSD68 [--minutes 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from baryir.data.datasets import AllInOneDataset
from baryir.evaluate import evaluate, markdown_table, synthetic_items


class PlainCNN(nn.Module):
    """Residual plain CNN: predicts the degradation and subtracts it."""

    def __init__(self, channels: int, middle_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
        for _ in range(middle_layers):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(channels, 3, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


def train(net: nn.Module, data: AllInOneDataset, minutes: float, batch_size: int, lr: float) -> int:
    """Train ``net`` until ``minutes`` have passed; returns the number of steps taken."""
    loader = DataLoader(data, batch_size=batch_size, num_workers=1)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    start, budget, steps = time.time(), minutes * 60, 0
    for degraded, clean, _, _ in loader:
        elapsed = (time.time() - start) / budget
        if elapsed >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * elapsed))
        with torch.autocast("cpu", torch.bfloat16):
            loss = (net(degraded).float() - clean).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps % 500 == 0:
            print(f"step {steps}, {time.time() - start:.0f} s, L1 {loss.item():.4f}", flush=True)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="folders of clean training photos")
    parser.add_argument("--clean", required=True, help="clean test photos (e.g. CBSD68), degraded per task")
    parser.add_argument("--tasks", nargs="+", default=["denoise_25"])
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget")
    parser.add_argument("--channels", type=int, default=48)
    parser.add_argument("--middle-layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, help="evaluate on the first N test photos only")
    parser.add_argument("--json", help="write parameters, steps and the results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    net = PlainCNN(args.channels, args.middle_layers)
    params = sum(p.numel() for p in net.parameters())
    print(f"plain CNN: {params} parameters, {args.minutes} min on {torch.get_num_threads()} CPU threads", flush=True)
    steps = train(net, AllInOneDataset(args.data, args.tasks, 64, seed=0), args.minutes, args.batch_size, args.lr)
    net.eval()
    with torch.no_grad():
        rows = evaluate(lambda img: net(img[None])[0], synthetic_items(args.clean, args.tasks, limit=args.limit))
    print(f"{steps} steps\n" + markdown_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": params, "minutes": args.minutes, "steps": steps, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
