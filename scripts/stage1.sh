#!/usr/bin/env bash
# Stage 1 under DeepSpeed, both phases in order: projector-only pretraining, then LLM + projector.
#   bash scripts/stage1.sh [KEY=VALUE ...]
# Overrides apply to both phases, except that preset=... only chooses phase 1's starting model (phase 2
# starts from phase 1's result) and output_dir=DIR puts the phases in DIR/pretrain and DIR/finetune.
set -euo pipefail
here="$(dirname "$0")"
common=(); first=(); out=""
for a in "$@"; do
  case "$a" in
    preset=*|init=*) first+=("$a") ;;
    output_dir=*) out="${a#output_dir=}" ;;
    *) common+=("$a") ;;
  esac
done
p1=(); p2=()
if [ -n "$out" ]; then
  p1=(output_dir="$out/pretrain"); p2=(output_dir="$out/finetune" init="$out/pretrain/final")
fi
bash "$here/launch.sh" "$here/configs/stage1_pretrain.yaml" "${common[@]}" "${first[@]}" "${p1[@]}"
bash "$here/launch.sh" "$here/configs/stage1_finetune.yaml" "${common[@]}" "${p2[@]}"
