r"""Statistics of rain layers: real rainy/clean pairs against our rain generators on the same photos.

The rain layer is ``input - target`` (grey, clipped at 0): its intensity histogram over rain
pixels, the spread of streak orientations (structure tensor, weighted by gradient energy),
streak width and length (connected components of the thresholded layer) and density (share
of pixels that are rain). Each generator is applied to the real pairs' *targets*, so the scene
content is the same; the real pairs are only measured, never used to fit anything.

    python scripts/rain_stats.py --pairs data/test/Rain100L_sample/input data/test/Rain100L_sample/target \
        --tasks derain_ps derain derain_mix --json out/rain_stats.json --png docs/rain_stats.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from baryir.data.degradations import degrade
from baryir.data.photos import list_images, pair_by_name
from baryir.io.atomic import atomic_write
from baryir.io.images import read_rgb_float

#: A pixel is rain where the layer exceeds this (in [0, 1] units).
RAIN_THRESHOLD = 0.04
INTENSITY_BINS = np.linspace(RAIN_THRESHOLD, 0.6, 12)
ANGLE_BINS = np.linspace(-90, 90, 19)  # degrees from vertical
WIDTH_BINS = np.array([0, 1, 2, 3, 4, 6, 10])
LENGTH_BINS = np.array([0, 5, 10, 20, 30, 45, 70, 120])


def layer_stats(layer: np.ndarray) -> dict:
    """Histograms and summaries of one (H, W) rain layer in [0, 1]."""
    rain = layer > RAIN_THRESHOLD
    gy, gx = np.gradient(ndimage.gaussian_filter(layer, 1.0))
    jxx, jyy, jxy = (ndimage.gaussian_filter(v, 2.0) for v in (gx * gx, gy * gy, gx * gy))
    # the dominant gradient direction, from the horizontal; a streak runs perpendicular to its
    # gradient, so this is also the streak's angle from the vertical
    theta = 0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy))
    streak = (theta + 90) % 180 - 90  # wrapped to [-90, 90)
    energy = (jxx + jyy) * rain
    labels, count = ndimage.label(rain)
    widths, lengths = [], []
    for sl, index in zip(ndimage.find_objects(labels), range(1, count + 1)):
        ys, xs = np.nonzero(labels[sl] == index)
        if len(ys) < 4:
            continue
        cov = np.cov(np.stack([ys, xs]).astype(np.float64))
        major = 4 * np.sqrt(max(np.linalg.eigvalsh(cov)[-1], 1e-6))  # ~ length of a uniform bar
        lengths.append(major)
        widths.append(len(ys) / major)
    return {
        "density": float(rain.mean()),
        "intensity": np.histogram(layer[rain], INTENSITY_BINS)[0].tolist(),
        "angle": np.histogram(streak[rain], ANGLE_BINS, weights=energy[rain])[0].tolist(),
        "width": np.histogram(widths, WIDTH_BINS)[0].tolist(),
        "length": np.histogram(lengths, LENGTH_BINS)[0].tolist(),
        "median_width": float(np.median(widths)) if widths else 0.0,
        "median_length": float(np.median(lengths)) if lengths else 0.0,
        "p99_intensity": float(np.percentile(layer, 99)),
    }


def _grey(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W)."""
    return img.mean(-1)


def collect(pairs: list[tuple[Path, Path]], source: str, seeds: int = 2) -> dict:
    """Summed histograms and mean summaries of the real pairs (``source="real"``) or of task
    ``source`` applied to their targets (``seeds`` draws each)."""
    rows = []
    for i, (rainy, clean) in enumerate(pairs):
        target = read_rgb_float(clean)
        if source == "real":
            rows.append(layer_stats(np.clip(_grey(read_rgb_float(rainy) - target), 0, 1)))
            continue
        for s in range(seeds):
            chw = torch.from_numpy(np.ascontiguousarray(target.transpose(2, 0, 1)))
            made = degrade(chw, source, seed=1000 * i + s).numpy().transpose(1, 2, 0)
            rows.append(layer_stats(np.clip(_grey(made - target), 0, 1)))
    out: dict = {"images": len(rows)}
    for key in ("intensity", "angle", "width", "length"):
        total = np.sum([r[key] for r in rows], axis=0).astype(np.float64)
        out[key] = (total / max(total.sum(), 1e-12)).round(4).tolist()
    for key in ("density", "median_width", "median_length", "p99_intensity"):
        out[key] = round(float(np.mean([r[key] for r in rows])), 4)
    return out


def markdown(report: dict) -> str:
    """One row per source: density, widths, lengths, brightness and orientation spread."""
    lines = [
        "| source | images | rain share | median width px | median length px | p99 of layer "
        "| share of streak energy within ±10° of vertical |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    centre = (ANGLE_BINS[:-1] + ANGLE_BINS[1:]) / 2
    for name, s in report["sources"].items():
        near = sum(w for c, w in zip(centre, s["angle"]) if abs(c) <= 10)
        lines.append(
            f"| {name} | {s['images']} | {s['density']:.3f} | {s['median_width']:.2f} | {s['median_length']:.1f} "
            f"| {s['p99_intensity']:.3f} | {near:.2f} |"
        )
    return "\n".join(lines)


def figure(report: dict, path: Path) -> Path:
    """Four panels of side-by-side histograms (intensity, orientation, width, length), PIL only."""
    panels = [("intensity", INTENSITY_BINS), ("angle", ANGLE_BINS), ("width", WIDTH_BINS), ("length", LENGTH_BINS)]
    colours = [(40, 40, 40), (200, 60, 60), (60, 110, 200), (60, 160, 90), (200, 150, 40)]
    sources = list(report["sources"])
    pw, ph, top = 420, 220, 30
    img = Image.new("RGB", (pw * 2, (ph + top) * 2 + 50), "white")
    draw = ImageDraw.Draw(img)
    for k, (name, bins) in enumerate(panels):
        x0, y0 = (k % 2) * pw, (k // 2) * (ph + top) + 55
        draw.text((x0 + 10, y0 - 22), f"{name} (share per bin)", fill="black")
        values = [report["sources"][s][name] for s in sources]
        peak = max(max(v) for v in values) or 1
        n, group = len(bins) - 1, (pw - 40) / (len(bins) - 1)
        for b in range(n):
            for j, v in enumerate(values):
                h = (ph - 30) * v[b] / peak
                left = x0 + 20 + b * group + j * group / (len(sources) + 1)
                draw.rectangle(
                    [left, y0 + ph - 20 - h, left + group / (len(sources) + 1) - 1, y0 + ph - 20], fill=colours[j]
                )
            if b % max(1, n // 5) == 0:
                draw.text((x0 + 20 + b * group, y0 + ph - 16), f"{bins[b]:.2g}", fill="black")
    for j, s in enumerate(sources):
        draw.rectangle([10 + 160 * j, 8, 22 + 160 * j, 20], fill=colours[j])
        draw.text((28 + 160 * j, 8), s, fill="black")
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs=2, required=True, metavar=("RAINY_DIR", "CLEAN_DIR"))
    parser.add_argument("--tasks", nargs="+", default=["derain_ps", "derain", "derain_mix"])
    parser.add_argument("--seeds", type=int, default=2, help="draws of each generator per photo")
    parser.add_argument("--json", help="write the statistics here")
    parser.add_argument("--png", help="write the side-by-side figure here")
    args = parser.parse_args()
    pairs = pair_by_name(list_images(Path(args.pairs[0])), list_images(Path(args.pairs[1])))
    if not pairs:
        parser.error(f"no pairs with matching names in {args.pairs[0]} and {args.pairs[1]}")
    real = f"real ({Path(args.pairs[0]).parent.name or 'pairs'})"
    report = {"sources": {real: collect(pairs, "real")}}
    for task in args.tasks:
        report["sources"][task] = collect(pairs, task, args.seeds)
    print(markdown(report))
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    if args.png:
        print(f"figure: {figure(report, Path(args.png))}")


if __name__ == "__main__":
    main()
