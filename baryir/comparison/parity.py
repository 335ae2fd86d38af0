"""Backend parity: the same real degraded images through every backend x precision, compared
with PyTorch FP32 and with the clean targets."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from baryir.export.api import export_code_fingerprint, export_model, source_checkpoint
from baryir.formats import BY_BACKEND, DEPLOYMENT_REWRITES, export_precision_of
from baryir.runtimes.base import BackendUnavailable
from baryir.runtimes.compare import compare
from baryir.runtimes.loader import load_runner, runner_class
from baryir.runtimes.verify import ArtifactCheckError

from ..evaluate import EvalItem, Restore
from ..io.digest import file_sha256
from ..metrics import psnr, ssim

#: Default budgets: FP32/FP16/BF16 against PyTorch FP32 (dB), INT8 as loss against the target.
BUDGETS = {
    "fp32": ("psnr_vs_reference", 50.0),
    "fp16": ("psnr_vs_reference", 40.0),
    "bf16": ("psnr_vs_reference", 40.0),
    "int8": ("target_loss_db", 0.3),
    "int8+bf16": ("target_loss_db", 0.3),
}
PSNR_CAP = 200.0  # identical outputs report this instead of infinity


@dataclass
class Combo:
    backend: str
    precision: str


def large_item(item: EvalItem, size: tuple[int, int] = (1032, 776)) -> EvalItem:
    """A >= 1024 px input made by mirroring a real test pair to ``size`` (odd sizes come from
    the data sets themselves, e.g. CBSD68's 481 x 321)."""

    def mirror(img: torch.Tensor) -> torch.Tensor:
        arr = img.numpy()
        pad = ((0, 0), (0, max(0, size[0] - arr.shape[1])), (0, max(0, size[1] - arr.shape[2])))
        return torch.from_numpy(np.pad(arr, pad, mode="symmetric")[:, : size[0], : size[1]].copy())

    return EvalItem(
        item.dataset, item.task, f"{item.name}@{size[0]}x{size[1]}", mirror(item.degraded), mirror(item.target)
    )


def unavailable_reason(backend: str) -> str | None:
    """Why ``backend`` cannot run here (checked before exporting anything for it), or None."""
    fmt = BY_BACKEND.get(backend)
    return (fmt.cannot_run_here() if fmt else None) or runner_class(backend).unavailable_here()


def cached_export_folder(cache: Path, checkpoint: Path, backend: str, export_precision: str) -> Path:
    """Where parity and bench keep the export of ``checkpoint`` for ``backend``: keyed by the
    checkpoint's content, the graph rewrites the export applies and the code that exports, so
    retrained or re-quantized weights, a newer export graph or a fixed exporter never reuse a
    stale export."""
    fmt = BY_BACKEND[backend]
    rewrites = fmt.rewrites(DEPLOYMENT_REWRITES) if export_precision != "int8" else ()
    content = file_sha256(checkpoint) + ",".join(rewrites) + export_code_fingerprint()
    return cache / hashlib.sha256(content.encode()).hexdigest()[:16] / f"{fmt.name}-{export_precision}"


def artifact_for(model: str, backend: str, precision: str, cache: Path, int8_model: str | None = None) -> str:
    """The checkpoint (torch) or an exported artifact folder in ``cache`` (exported if missing).
    INT8 artifacts come from ``int8_model`` (a ``baryir quantize`` output) or, for a shipped
    name such as ``default``, from its shipped INT8 version."""
    if backend == "torch":
        if precision == "int8":
            raise BackendUnavailable("PyTorch has no INT8 runtime (NNCF only emulates it); use onnxruntime/openvino")
        return model
    reason = unavailable_reason(backend)
    if reason:
        raise BackendUnavailable(reason)
    fmt = BY_BACKEND[backend].name
    try:
        export_precision = export_precision_of(backend, precision)
    except ValueError as e:
        raise BackendUnavailable(str(e)) from None
    source = (int8_model or model) if export_precision == "int8" else model
    folder = cached_export_folder(cache, source_checkpoint(source, export_precision), backend, export_precision)
    if not (folder / "manifest.json").exists():
        options = BY_BACKEND[backend].compare_options
        export_model(source, fmt, export_precision, folder.parent, validate=False, shapes=((256, 256),), **options)
    return str(folder)


def open_runner(artifact: str, backend: str, precision: str, torch_device: str = "cpu"):
    """A runner for a parity/bench row: torch on ``torch_device`` (``cpu`` or ``cuda``), ONNX
    Runtime on the CPU, the others on their own device; graph-typed backends (ONNX Runtime,
    TensorRT) take the precision the artifact was exported at."""
    device = {"torch": torch_device, "onnxruntime": "cpu"}.get(backend)
    fixed = backend in BY_BACKEND and not BY_BACKEND[backend].precision_at_runtime
    return load_runner(artifact, backend, device, None if fixed else precision)


def runner_restore(runner) -> Restore:
    """``runner`` as the (3, H, W) tensor -> tensor function :func:`~baryir.evaluate.evaluate` takes."""
    return lambda image: torch.from_numpy(runner.restore(image.permute(1, 2, 0).numpy()).transpose(2, 0, 1))


def _run(runner, item: EvalItem) -> np.ndarray:
    return runner_restore(runner)(item.degraded).numpy()


def _row(runner, outs: list[np.ndarray], references: list[np.ndarray], items: list[EvalItem]) -> dict:
    """One parity row: ``outs`` of ``runner`` against the references (the one comparator,
    worst image) and the clean targets."""
    compared = [compare(o, r) for o, r in zip(outs, references)]
    finite = all(c["finite"] for c in compared)
    diffs = np.concatenate([np.abs(o - r).ravel() for o, r in zip(outs, references)])
    changed = np.concatenate([(np.round(o * 255) != np.round(r * 255)).ravel() for o, r in zip(outs, references)])
    return {
        "backend": runner.info.backend,
        "device": runner.info.device,
        "runs_at": runner.info.precision,
        "psnr_vs_reference": min(min(c["psnr"], PSNR_CAP) for c in compared),
        "max_abs": max(c["max_abs"] for c in compared),
        "p99_abs": float(np.quantile(diffs, 0.99)) if finite else math.inf,
        "changed_8bit": float(np.mean(changed)),
        "psnr_vs_target": float(np.mean([psnr(o, it.target) for o, it in zip(outs, items)])),
        "ssim_vs_target": float(np.mean([ssim(torch.from_numpy(o), it.target) for o, it in zip(outs, items)])),
    }


def run_parity(
    model: str,
    items: list[EvalItem],
    combos: list[Combo],
    cache: Path,
    budgets: dict | None = None,
    int8_model: str | None = None,
    torch_device: str = "cpu",
) -> dict:
    """Rows for torch-fp32 on the CPU (the reference) and every combo; skipped combos carry a
    note. ``torch_device`` runs the torch rows there (``cuda``: a torch CUDA fp32 row too)."""
    budgets = {**BUDGETS, **(budgets or {})}
    reference_runner = load_runner(model, "torch", "cpu", "fp32")
    references = [_run(reference_runner, it) for it in items]
    rows = [{**_row(reference_runner, references, references, items), "precision": "fp32"}]
    reference_runner.close()
    skipped, failed = [], []
    on_cpu = torch_device == "cpu"
    for combo in [c for c in combos if not (on_cpu and (c.backend, c.precision) == ("torch", "fp32"))]:
        try:
            artifact = artifact_for(model, combo.backend, combo.precision, cache, int8_model)
            runner = open_runner(artifact, combo.backend, combo.precision, torch_device)
        except (BackendUnavailable, ValueError, FileNotFoundError) as e:
            skipped.append({"backend": combo.backend, "precision": combo.precision, "reason": str(e)})
            continue
        except ArtifactCheckError as e:  # wrong output here: a failed row, never a speed or quality number
            failed.append({"backend": combo.backend, "precision": combo.precision, "passed": False, "failed": str(e)})
            continue
        outs = [_run(runner, it) for it in items]
        rows.append({**_row(runner, outs, references, items), "precision": combo.precision})
        runner.close()
    base = rows[0]
    for row in rows:
        row["target_loss_db"] = base["psnr_vs_target"] - row["psnr_vs_target"]
        key, limit = budgets[row["precision"]]
        value = row[key]
        row["passed"] = bool(
            np.isfinite(row["max_abs"]) and (value >= limit if key == "psnr_vs_reference" else value <= limit)
        )
        row["budget"] = f"{key} {'>=' if key == 'psnr_vs_reference' else '<='} {limit}"
    return {
        "reference": "torch-fp32",
        "images": [f"{it.dataset}/{it.task}/{it.name}" for it in items],
        "rows": rows + failed,
        "skipped": skipped,
    }


def markdown(report: dict) -> str:
    """The parity report as a Markdown table."""
    lines = [
        "| backend | precision | device | runs at | PSNR vs torch | max abs | p99 abs | 8-bit changed "
        "| PSNR vs target | SSIM vs target | Δ dB | pass |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        if "failed" in r:
            lines.append(f"| {r['backend']} | {r['precision']} | FAILED: {r['failed']} | | | | | | | | | NO |")
            continue
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r['device']} | {r['runs_at']} | {r['psnr_vs_reference']:.1f} "
            f"| {r['max_abs']:.2e} | {r['p99_abs']:.2e} | {100 * r['changed_8bit']:.2f}% | {r['psnr_vs_target']:.2f} "
            f"| {r['ssim_vs_target']:.4f} | {-r['target_loss_db']:+.3f} | {'yes' if r['passed'] else 'NO'} |"
        )
    lines += [f"\nskipped {s['backend']} {s['precision']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines)
