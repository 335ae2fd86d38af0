"""Per-operation profiles of a runner: where the time of one run goes, by operation type and by
layer, as the backend's own profiler measured it (``baryir bench --profile``)."""

from __future__ import annotations

from collections import defaultdict

from baryir.runtimes.base import OpTime


def summarise(ops: list[OpTime], top: int) -> dict:
    """The ``top`` operation types and layers by time per run, each with its share of the total
    and the kernels that ran it (a reference kernel in OpenVINO is named ``ref_*``)."""
    total = sum(op.ms for op in ops)
    by_type: dict[str, dict] = defaultdict(lambda: {"ms": 0.0, "layers": 0, "kernels": defaultdict(float)})
    for op in ops:
        row = by_type[op.op]
        row["ms"] += op.ms
        row["layers"] += 1
        row["kernels"][op.kernel] += op.ms

    def share(ms: float) -> float:
        return round(ms / total, 4) if total else 0.0

    types = sorted(by_type.items(), key=lambda item: -item[1]["ms"])[:top]
    layers = sorted(ops, key=lambda op: -op.ms)[:top]
    return {
        "total_ms": round(total, 2),
        "by_type": [
            {
                "op": name,
                "ms": round(row["ms"], 2),
                "share": share(row["ms"]),
                "layers": row["layers"],
                "kernels": {k: round(v, 2) for k, v in sorted(row["kernels"].items(), key=lambda kv: -kv[1])},
            }
            for name, row in types
        ],
        "by_layer": [
            {"name": op.name, "op": op.op, "kernel": op.kernel, "ms": round(op.ms, 2), "share": share(op.ms)}
            for op in layers
        ],
    }


def markdown(row: dict) -> str:
    """One bench row's profile as two Markdown tables (operation types, then layers)."""
    title = (
        f"### {row['backend']} {row['precision']} {row['height']}x{row['width']} (runs at {row.get('runs_at', '?')})"
    )
    prof = row["profile"]
    if "unavailable" in prof:
        return f"{title}\n\nno profile: {prof['unavailable']}"
    lines = [
        title,
        "",
        f"sum of operation times: {prof['total_ms']} ms per run "
        f"(operations may overlap; p50 {row.get('p50_ms', '?')} ms)",
        "",
        "| operation | ms per run | share | layers | kernels (ms) |",
        "|---|---:|---:|---:|---|",
    ]
    for t in prof["by_type"]:
        kernels = ", ".join(f"{k} {v}" for k, v in t["kernels"].items())
        lines.append(f"| {t['op']} | {t['ms']} | {t['share']:.1%} | {t['layers']} | {kernels} |")
    lines += ["", "| layer | operation | kernel | ms per run | share |", "|---|---|---|---:|---:|"]
    lines += [
        f"| `{x['name'][:70]}` | {x['op']} | {x['kernel']} | {x['ms']} | {x['share']:.1%} |" for x in prof["by_layer"]
    ]
    return "\n".join(lines)
