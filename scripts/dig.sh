#!/usr/bin/env bash
# DiG GRPO post-training under DeepSpeed ZeRO-2 (all GPUs, or 2 CPU processes):
#   bash scripts/dig.sh [--config YAML] [KEY=VALUE ...]     (config: scripts/configs/dig.yaml)
# e.g. bash scripts/dig.sh init=checkpoints/tinygg-1.5b-stage3 pairs_root=runs/dig/pairs stages.mixed.max_steps=400
# Run it again to resume: finished curriculum stages are skipped, a killed stage restarts from its checkpoint.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
config="$here/configs/dig.yaml"
if [ "${1:-}" = "--config" ]; then config="$2"; shift 2; fi
MODULE=dig.grpo_cli exec bash "$here/launch.sh" "$config" "$@"
