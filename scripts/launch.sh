#!/usr/bin/env bash
# Run one training config under the real DeepSpeed launcher.
#   bash scripts/launch.sh CONFIG.yaml [KEY=VALUE ...]
# All GPUs when present; otherwise 2 CPU processes (gloo). Environment:
#   NPROC=N        processes per node (default: every GPU, or 2 on a CPU machine)
#   HOSTFILE=FILE  a DeepSpeed hostfile for several nodes
#   DS_CONFIG=FILE DeepSpeed JSON (default scripts/zero2.json; scripts/zero3.json for ZeRO-3)
#   MODULE=NAME    the Python module to run (default tinygg.train; scripts/dig.sh uses dig.grpo_cli)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
config="$1"; shift

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L | wc -l)
  nproc="${NPROC:-$gpus}"
  extra=()
else
  export DS_ACCELERATOR=cpu
  nproc="${NPROC:-2}"
  extra=(use_cpu=true)
  # each CPU process gets its share of the cores
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / nproc > 0 ? $(nproc) / nproc : 1 ))}"
fi
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions}"

launcher=(deepspeed --num_gpus "$nproc" --master_port "${MASTER_PORT:-$(( 29500 + RANDOM % 1000 ))}")
[ -n "${HOSTFILE:-}" ] && launcher=(deepspeed --hostfile "$HOSTFILE")
exec "${launcher[@]}" --module "${MODULE:-tinygg.train}" --config "$config" \
  deepspeed="${DS_CONFIG:-$here/zero2.json}" "${extra[@]}" "$@"
