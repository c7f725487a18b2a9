#!/usr/bin/env bash
# stage3 under DeepSpeed: bash scripts/stage3.sh [KEY=VALUE ...]   (config: scripts/configs/stage3.yaml)
exec bash "$(dirname "$0")/launch.sh" "$(dirname "$0")/configs/stage3.yaml" "$@"
