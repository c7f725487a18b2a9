#!/usr/bin/env bash
# finetune_lora under DeepSpeed: bash scripts/finetune_lora.sh [KEY=VALUE ...]   (config: scripts/configs/finetune_lora.yaml)
exec bash "$(dirname "$0")/launch.sh" "$(dirname "$0")/configs/finetune_lora.yaml" "$@"
