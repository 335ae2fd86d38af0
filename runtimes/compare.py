"""The one comparator: an artifact's output against its reference, and the tolerances it must meet.

Export validation, ``baryir verify``, the runners' check at load, parity and bench all judge
outputs with :func:`compare` and :func:`check_tolerance` (numpy only, no torch).
"""

from __future__ import annotations

import numpy as np

#: What an artifact must reach against its PyTorch reference (``golden.npz`` holds it): the FP32
#: model for fp32/fp16, the fake-quantized model for int8 (the integer kernels round where
#: PyTorch's float emulation does not; the INT8 quality budget against the clean target lives
#: in ``baryir parity``).
#: ``degradation_max_abs`` bounds the second output (class probabilities) where an artifact has one.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs": 1e-4, "degradation_max_abs": 1e-4},
    "fp16": {"psnr": 40.0, "degradation_max_abs": 0.02},
    "bf16": {"psnr": 40.0, "degradation_max_abs": 0.02},  # an fp32 artifact computed in bf16 (OpenVINO on AMX)
    "int8": {"psnr": 35.0, "degradation_max_abs": 0.05},
}


#: How many bits of float each precision computes with, coarsest first: an artifact run at a
#: coarser precision than it was exported at is held to that precision's budget; run at a finer
#: one (an FP16 IR that OpenVINO computes in f32), it keeps its own.
PRECISION_RANK = {"int8": 0, "bf16": 1, "fp16": 1, "fp32": 2}


def budget_precision(exported: str, runs_at: str) -> str:
    """The precision whose budget an artifact exported at ``exported`` and run at ``runs_at`` must meet."""
    if runs_at in PRECISION_RANK and exported in PRECISION_RANK and PRECISION_RANK[runs_at] < PRECISION_RANK[exported]:
        return runs_at
    return exported


def tolerance_for(precision: str, stated: object = None) -> dict[str, float]:
    """The budget of ``precision`` from :data:`TOLERANCES`; a manifest's ``stated`` tolerance may
    only tighten it (a smaller ``max_abs``, a higher ``psnr``), never loosen it."""
    if precision not in TOLERANCES:
        raise ValueError(f"no tolerance for precision {precision!r} (known: {', '.join(TOLERANCES)})")
    tol = dict(TOLERANCES[precision])
    if isinstance(stated, dict):
        for key, value in stated.items():
            if key not in tol or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not np.isfinite(value):
                continue
            tol[key] = min(tol[key], float(value)) if key.endswith("max_abs") else max(tol[key], float(value))
    return tol


def compare(ours: np.ndarray, ref: np.ndarray) -> dict:
    """Max abs error and PSNR (dB, data range 1) of an output against its reference."""
    finite = bool(np.isfinite(ours).all())
    if not finite:
        return {"max_abs": float("inf"), "psnr": 0.0, "finite": False}
    diff = ours.astype(np.float64) - ref.astype(np.float64)
    mse = float(np.mean(diff**2))
    return {
        "max_abs": float(np.abs(diff).max()),
        "psnr": float("inf") if mse == 0 else float(10 * np.log10(1 / mse)),
        "finite": True,
    }


def compare_degradation(ours: np.ndarray, ref: np.ndarray) -> dict:
    """A row's field for the degradation output (class probabilities) against its reference."""
    if ours.shape != ref.shape or not np.isfinite(ours).all():
        return {"degradation_max_abs": float("inf")}
    return {"degradation_max_abs": float(np.abs(ours.astype(np.float64) - ref).max())}


def check_tolerance(precision: str, rows: list[dict], tolerance: dict[str, float] | None = None) -> list[str]:
    """Failures of compared rows against ``tolerance`` (default :data:`TOLERANCES` of the
    precision); NaN/Inf always fails."""
    tol = TOLERANCES.get(precision, {}) if tolerance is None else tolerance
    failures = []
    for r in rows:
        where = f"{r['size']}: " if "size" in r else ""
        if not r["finite"]:
            failures.append(f"{where}NaN/Inf in the output")
        elif "max_abs" in tol and r["max_abs"] > tol["max_abs"]:
            failures.append(f"{where}max abs error {r['max_abs']:.2e} > {tol['max_abs']:.0e}")
        elif "psnr" in tol and r["psnr"] < tol["psnr"]:
            failures.append(f"{where}{r['psnr']:.1f} dB vs PyTorch < {tol['psnr']} dB")
        if "degradation_max_abs" in r and not r["degradation_max_abs"] <= tol.get("degradation_max_abs", 0.0):
            failures.append(f"{where}degradation output differs by {r['degradation_max_abs']:.2e}")
    return failures
