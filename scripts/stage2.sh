#!/usr/bin/env bash
# stage2 under DeepSpeed: bash scripts/stage2.sh [KEY=VALUE ...]   (config: scripts/configs/stage2.yaml)
exec bash "$(dirname "$0")/launch.sh" "$(dirname "$0")/configs/stage2.yaml" "$@"
