"""The papers' evaluation protocol over paired folders or synthesised test inputs.

RGB PSNR/SSIM on float [0, 1] outputs, data range 1, no border shave; sizes that are not a
multiple of 8 are padded for the network and cropped back, so the whole image is measured.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .data.degradations import degrade
from .data.photos import list_images, log_skipped, pair_by_name, read_images
from .metrics import psnr, ssim

Restore = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EvalItem:
    """One test image: its data set, task, file name, degraded input and clean target."""

    dataset: str
    task: str
    name: str
    degraded: torch.Tensor
    target: torch.Tensor


def image_seed(task: str, name: str) -> int:
    """The fixed per-image seed used to synthesise a test input (stable across runs)."""
    return zlib.crc32(f"{task}/{name}".encode())


def paired_items(
    input_dir: str | Path,
    target_dir: str | Path,
    task: str = "paired",
    dataset: str | None = None,
    limit: int | None = None,
    skipped: list[str] | None = None,
) -> list[EvalItem]:
    """Items from an ``input/`` + ``target/`` pair of folders, matched by base name (at most
    ``limit``). A pair without a partner, with an unreadable file or of two sizes is logged and
    skipped (one line appended to ``skipped`` each)."""
    pairs = pair_by_name(list_images(input_dir), list_images(target_dir), skipped)
    name = dataset or Path(input_dir).resolve().parent.name
    items = []
    for inp, tgt in pairs:
        if limit is not None and len(items) >= limit:
            break
        read, _ = read_images([inp, tgt], skipped=skipped)
        if len(read) < 2:
            continue
        degraded, target = read
        if degraded.shape != target.shape:
            log_skipped(
                skipped, f"{inp}: its size {tuple(degraded.shape[1:])} differs from {tgt}'s {tuple(target.shape[1:])}"
            )
            continue
        items.append(EvalItem(name, task, inp.name, degraded, target))
    return items


def synthetic_items(
    clean_dir: str | Path,
    tasks: Iterable[str],
    dataset: str | None = None,
    limit: int | None = None,
    skipped: list[str] | None = None,
) -> list[EvalItem]:
    """Items synthesised from clean photos, one per (task, image), with fixed seeds; unreadable
    photos are logged and skipped (appended to ``skipped``)."""
    images, paths = read_images(list_images(clean_dir), limit=limit, skipped=skipped)
    name = dataset or Path(clean_dir).name
    return [
        EvalItem(name, task, p.name, degrade(img, task, image_seed(task, p.name)), img)
        for task in tasks
        for img, p in zip(images, paths)
    ]


def evaluate(restore: Restore, items: list[EvalItem], with_ssim: bool = True, progress: bool = True) -> list[dict]:
    """Mean PSNR/SSIM of ``restore`` (and of the raw inputs) per (dataset, task), the worst
    image's PSNR and how many images came out worse than they went in (for a clean pair, whose
    input is perfect, every image that comes out changed at all)."""
    groups: dict[tuple[str, str], list[dict[str, float]]] = {}
    for item in tqdm(items, desc="evaluate", unit="img", disable=not progress):
        out = restore(item.degraded).float().clamp(0, 1)
        scores = {"psnr": psnr(out, item.target), "input_psnr": psnr(item.degraded, item.target)}
        if with_ssim:
            scores["ssim"] = ssim(out, item.target)
            scores["input_ssim"] = ssim(item.degraded, item.target)
        groups.setdefault((item.dataset, item.task), []).append(scores)
    rows = []
    for (dataset, task), scores in groups.items():
        row: dict = {"dataset": dataset, "task": task, "n": len(scores)}
        for key in scores[0]:
            row[key] = sum(s[key] for s in scores) / len(scores)
        row["worst_psnr"] = min(s["psnr"] for s in scores)
        row["made_worse"] = sum(s["psnr"] < s["input_psnr"] for s in scores)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows of :func:`evaluate` as a Markdown table."""
    lines = [
        "| dataset | task | n | PSNR | SSIM | input PSNR | input SSIM | worst PSNR | made worse |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['task']} | {r['n']} | {r['psnr']:.2f} | {r.get('ssim', float('nan')):.4f} "
            f"| {r['input_psnr']:.2f} | {r.get('input_ssim', float('nan')):.4f} | {r['worst_psnr']:.2f} "
            f"| {r['made_worse']} |"
        )
    return "\n".join(lines)
