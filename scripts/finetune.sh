#!/usr/bin/env bash
# finetune under DeepSpeed: bash scripts/finetune.sh [KEY=VALUE ...]   (config: scripts/configs/finetune.yaml)
exec bash "$(dirname "$0")/launch.sh" "$(dirname "$0")/configs/finetune.yaml" "$@"
