"""The machine an artifact runs on: library versions and what the CPU can do for int8/bf16 (torch-free).

OpenVINO's CPU plugin (oneDNN) picks its int8 kernels by these features: AMX or VNNI add
int8 products in 32 bits; AVX2 alone adds u8 x s8 pairs into saturating int16, which full-range
8-bit weights overflow. ``ONEDNN_MAX_CPU_ISA`` caps what oneDNN uses, so it is reported too.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

from ..cpu import cpu_features

#: The libraries whose versions every report names.
LIBRARIES = (
    "torch",
    "numpy",
    "pillow",
    "onnx",
    "onnxruntime",
    "onnxslim",
    "openvino",
    "nncf",
    "coremltools",
    "tensorrt",
)


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of ``names`` (default :data:`LIBRARIES`); missing ones are left out."""
    versions = {}
    for name in names or LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def describe_cpu() -> str:
    """One line: processor, int8/bf16 features and any oneDNN ISA cap."""
    feats = cpu_features()
    listed = " ".join(f"{k}{'+' if v else '-'}" for k, v in feats.items()) or "features unknown"
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"{platform.machine()} {listed}" + (f" (ONEDNN_MAX_CPU_ISA={cap})" if cap else "")


def onednn_hides_bf16() -> bool:
    """Whether ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below the CPU's bf16 instructions (OpenVINO then
    fails to compile bf16 kernels instead of falling back to f32 as on a CPU without them)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return cap != "ALL" and not any(k in cap for k in ("BF16", "AMX"))


def int8_saturates() -> bool:
    """Whether oneDNN's int8 kernels here add u8 x s8 pairs in saturating int16: x86 without
    VNNI/AMX, or ``ONEDNN_MAX_CPU_ISA`` capped below them (AVX2, AVX512_CORE, ...)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    capped = cap != "ALL" and not any(k in cap for k in ("VNNI", "AMX", "BF16", "FP16"))
    feats = cpu_features()
    hardware = bool(feats) and platform.machine() in ("x86_64", "AMD64") and not (feats["vnni"] or feats["amx"])
    return capped or hardware
