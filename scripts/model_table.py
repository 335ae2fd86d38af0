"""Print the model table of docs/model.md (params, GMACs, CPU latency) and write it as JSON.

Usage: python scripts/model_table.py [--json FILE] [--repeats N]
"""

from __future__ import annotations

import argparse
import json

import torch

from baryir import build_model
from baryir.model import CONFIGS
from baryir.model.complexity import count_gmacs, count_parameters, cpu_latency_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    print(f"CPU: {torch.get_num_threads()} threads, torch {torch.__version__}, eager FP32, batch 1\n")
    print("| config | params (M) | GMACs 256² | GMACs 512² | CPU ms 256² | CPU ms 512² |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in CONFIGS:
        model = build_model(name).eval()
        row = {
            "config": name,
            "params_m": round(count_parameters(model) / 1e6, 3),
            "gmacs_256": round(count_gmacs(model, 256, 256), 2),
            "gmacs_512": round(count_gmacs(model, 512, 512), 2),
            "cpu_ms_256": round(cpu_latency_ms(model, 256, 256, args.repeats), 1),
            "cpu_ms_512": round(cpu_latency_ms(model, 512, 512, args.repeats), 1),
        }
        rows.append(row)
        print("| " + " | ".join(str(v) for v in row.values()) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
