#!/usr/bin/env bash
# One prepared training run on a leased GPU machine (one NVIDIA GPU, PyTorch with CUDA installed,
# no network). Run from the repository root there, with the photos packed by scripts/pack_data.py
# carried in an ignored folder:
#
#   here:    python scripts/pack_data.py DATA/train/urban100_half DATA/train/sun_hays80 \
#                DATA/train/bsds500_378 -o out/pack
#   device:  bash scripts/gpu_train.sh out/pack RUN_SECONDS [baryir train options...]
#
# It installs this checkout without dependencies (they are on the machine), trains under
# `timeout` so that the run stops itself with everything saved (SIGTERM ends the step in progress
# and writes the checkpoint; see baryir/train.py), and leaves the run folder in $OUT/run, from
# which `baryir train ... --resume` continues on any machine.
set -euo pipefail
pack=${1:?usage: gpu_train.sh PACK_DIR RUN_SECONDS [train options]}
seconds=${2:?usage: gpu_train.sh PACK_DIR RUN_SECONDS [train options]}
shift 2
out=${OUT:?set OUT to the folder that comes back}
python -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$out/install.log" 2>&1 ||
    { echo "error: pip install -e . failed: see $out/install.log" >&2; exit 2; }
mapfile -t data < <(find "$pack" -mindepth 1 -maxdepth 1 -type d | sort)
[ ${#data[@]} -gt 0 ] || { echo "error: $pack holds no photo folders: pack them with scripts/pack_data.py" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
status=0
timeout --signal=TERM --kill-after=60 "$seconds" \
    python -m baryir.cli train --data "${data[@]}" --device cuda --precision bf16 --no-progress \
    -o "$out/run" "$@" 2>&1 | tee "$out/train.log" || status=$?
# 124: the time ran out and the run saved itself; anything else non-zero is a failure.
[ "$status" -eq 0 ] || [ "$status" -eq 124 ] || { echo "error: training failed ($status): see train.log" >&2; exit "$status"; }
