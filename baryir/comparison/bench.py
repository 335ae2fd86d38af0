"""Latency, throughput and memory of backends x precisions x sizes, each row in a fresh process.

Rows are measured one after another in one command, so their ratios hold on a noisy machine;
a fresh process per row gives a clean peak RSS and an honest first-run time.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import resource
import time
from pathlib import Path

import numpy as np

from baryir.formats import artifact_bytes
from baryir.runtimes.base import BackendUnavailable
from baryir.runtimes.environment import describe_cpu, library_versions
from baryir.runtimes.verify import ArtifactCheckError

from ..checkpoints import resolve_model_path
from ..io.atomic import atomic_write
from .parity import artifact_for, open_runner
from .profile import markdown as profile_markdown
from .profile import summarise


def _artifact_bytes(artifact: str) -> int:
    return artifact_bytes(Path(artifact) if Path(artifact).exists() else resolve_model_path(artifact))


def _measure(
    artifact: str,
    backend: str,
    precision: str,
    size: tuple[int, int],
    warmup: int,
    repeats: int,
    torch_device: str,
    profile_top: int,
    queue,
) -> None:
    try:
        start = time.perf_counter()
        runner = open_runner(artifact, backend, precision, torch_device)
        x = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
        runner.run(x)
        first = time.perf_counter() - start
        for _ in range(warmup):
            runner.run(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            runner.run(x)
            times.append((time.perf_counter() - t) * 1e3)
        p50, p90, p99 = (float(np.percentile(times, q)) for q in (50, 90, 99))
        profile = {}
        if profile_top:
            try:
                profile = {"profile": summarise(runner.profile(x, runs=min(repeats, 3)), profile_top)}
            except NotImplementedError as e:
                profile = {"profile": {"unavailable": str(e)}}
        queue.put(
            {
                "device": runner.info.device,
                "runs_at": runner.info.precision,
                "first_run_s": round(first, 3),
                "p50_ms": round(p50, 2),
                "p90_ms": round(p90, 2),
                "p99_ms": round(p99, 2),
                "throughput_ips": round(1e3 / p50, 3),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                **profile,
            }
        )
    except (BackendUnavailable, ValueError) as e:
        queue.put({"skipped": str(e)})
    except ArtifactCheckError as e:  # wrong output here: no speed is reported for it
        queue.put({"failed": f"wrong output: {e}"})
    except (MemoryError, RuntimeError) as e:
        queue.put({"failed": f"{type(e).__name__}: {str(e)[:300]}"})


def _result_of(proc, results) -> dict:
    """The child's result, or a failed row if it died without one (MemoryError, OOM kill)."""
    while True:
        try:
            result = results.get(timeout=1.0)
            break
        except queue.Empty:
            if proc.is_alive():
                continue
            try:  # it may have put its result just before it exited
                result = results.get(timeout=1.0)
            except queue.Empty:
                code = proc.exitcode
                how = f"killed by signal {-code}, out of memory?" if code and code < 0 else f"exit code {code}"
                result = {"failed": f"the measuring process died ({how}) without a result"}
            break
    proc.join()
    return result


def run_bench(
    model: str,
    combos: list[tuple[str, str]],
    sizes: list[tuple[int, int]],
    cache: Path,
    warmup: int = 2,
    repeats: int = 10,
    int8_model: str | None = None,
    torch_device: str = "cpu",
    profile_top: int = 0,
) -> dict:
    """One row per (backend, precision, size); unsupported combinations are skipped with a note.
    Torch rows run on ``torch_device`` (``cuda``: every run ends in a copy back to the host, so
    the timings include the GPU's work). ``profile_top`` > 0 adds each row's per-operation
    profile (its ``profile_top`` operation types and layers), measured after the timed runs."""
    ctx = mp.get_context("spawn")
    rows, skipped = [], []
    for backend, precision in combos:
        try:
            artifact = artifact_for(model, backend, precision, cache, int8_model)
        except (BackendUnavailable, ValueError, ImportError, FileNotFoundError) as e:
            skipped.append({"backend": backend, "precision": precision, "reason": str(e)})
            continue
        for h, w in sizes:
            queue = ctx.Queue()
            proc = ctx.Process(
                target=_measure,
                args=(artifact, backend, precision, (h, w), warmup, repeats, torch_device, profile_top, queue),
            )
            proc.start()
            result = _result_of(proc, queue)
            if "failed" in result:
                rows.append({"backend": backend, "precision": precision, "height": h, "width": w, **result})
                continue
            if "skipped" in result:
                skipped.append({"backend": backend, "precision": precision, "reason": result["skipped"]})
                break
            rows.append(
                {
                    "backend": backend,
                    "precision": precision,
                    "height": h,
                    "width": w,
                    **result,
                    "artifact_mb": round(_artifact_bytes(artifact) / 1e6, 2),
                }
            )
    return {
        "model": model,
        "libraries": library_versions("torch", "onnxruntime", "openvino", "coremltools", "tensorrt"),
        "cpu": describe_cpu(),
        "rows": rows,
        "skipped": skipped,
    }


def markdown(report: dict) -> str:
    """Benchmark rows as Markdown, with the speed-up over torch fp32 at the same size."""
    base = {
        (r["height"], r["width"]): r["p50_ms"]
        for r in report["rows"]
        if r["backend"] == "torch" and r["precision"] == "fp32" and "failed" not in r
    }
    lines = [
        "| backend | precision | size | device | runs at | p50 ms | p90 ms | p99 ms | first run s | img/s "
        "| peak RSS MB | artifact MB | vs torch fp32 |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        if "failed" in r:
            lines.append(f"| {r['backend']} | {r['precision']} | {r['height']}x{r['width']} | FAILED: {r['failed']} |")
            continue
        ref = base.get((r["height"], r["width"]))
        speed = f"{ref / r['p50_ms']:.2f}x" if ref else "-"
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r['height']}x{r['width']} | {r['device']} | "
            f"{r['runs_at']} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['first_run_s']} | "
            f"{r['throughput_ips']} | {r['peak_rss_mb']} | {r['artifact_mb']} | {speed} |"
        )
    lines += [f"\nskipped {s['backend']} {s['precision']}: {s['reason']}" for s in report["skipped"]]
    fastest = fastest_checked(report)
    if fastest:
        lines.append(
            f"\nfastest here: {fastest['backend']} {fastest['precision']} at {fastest['height']}x{fastest['width']} "
            f"({fastest['p50_ms']} ms p50; its artifact passed its check on this machine)"
        )
    lines += ["\n" + profile_markdown(r) for r in report["rows"] if "profile" in r]
    return "\n".join(lines)


def fastest_checked(report: dict) -> dict | None:
    """The fastest row at the largest benchmarked size among those that ran: a row whose artifact
    failed its check on this machine is a failed row, never a candidate."""
    ran = [r for r in report["rows"] if "failed" not in r]
    if not ran:
        return None
    largest = max(r["height"] * r["width"] for r in ran)
    return min((r for r in ran if r["height"] * r["width"] == largest), key=lambda r: r["p50_ms"])


def plot_png(report: dict, path: str | Path) -> Path:
    """A horizontal bar chart of p50 latency per row (PIL only, no plotting dependency)."""
    from PIL import Image, ImageDraw

    rows = [r for r in report["rows"] if "failed" not in r]
    labels = [f"{r['backend']} {r['precision']} {r['height']}x{r['width']}" for r in rows]
    width, bar_h, left = 900, 26, 300
    img = Image.new("RGB", (width, 40 + bar_h * max(1, len(rows))), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), "p50 latency (ms), lower is better", fill="black")
    top = max((r["p50_ms"] for r in rows), default=1.0)
    for i, (label, r) in enumerate(zip(labels, rows)):
        y = 35 + i * bar_h
        length = int((width - left - 90) * r["p50_ms"] / top)
        draw.text((10, y + 6), label, fill="black")
        draw.rectangle([left, y + 4, left + length, y + bar_h - 4], fill=(70, 120, 200))
        draw.text((left + length + 6, y + 6), f"{r['p50_ms']:.1f}", fill="black")
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
