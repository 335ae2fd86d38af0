"""What this CPU can do for int8 and bf16, read from /proc/cpuinfo (torch-free)."""

from __future__ import annotations

from functools import lru_cache

#: Report name -> /proc/cpuinfo flags (any of them).
_FLAGS = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "vnni": ("avx512_vnni", "avx_vnni"),
    "amx": ("amx_int8", "amx_tile"),
    "bf16": ("avx512_bf16", "amx_bf16"),
}


@lru_cache(maxsize=1)
def cpu_features() -> dict[str, bool]:
    """{avx2, avx512, vnni, amx, bf16} -> present, on Linux x86 (empty where unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return {}
    present = set(flags)
    return {name: any(flag in present for flag in names) for name, names in _FLAGS.items()} if present else {}


def bf16_native() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX): where bf16 autocast pays."""
    return cpu_features().get("bf16", False)
