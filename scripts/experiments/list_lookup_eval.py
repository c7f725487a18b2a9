"""How well a checkpoint answers text-only ``list2box`` samples (``tinygg data synth --tasks ...,list2box``):
the box copied from the listing, scored as exact text and as IoU >= 0.5, and how often the answer is the box of
another listed object (the lookup found an object but not the named one).

    python scripts/experiments/list_lookup_eval.py --model runs/x/final --data runs/corpus/val.json --limit 300
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from tinygg.boxes import box_iou, parse_boxes
from tinygg.inference import Query, generate, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory or zoo name")
    ap.add_argument("--data", required=True, help="samples JSON; only the list2box ones are asked")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    samples = [s for s in json.loads(Path(args.data).read_text()) if "_list2box_" in s["id"]][:args.limit]
    if not samples:
        raise SystemExit(f"{args.data}: no list2box samples (ids containing '_list2box_')")
    model, processor = load_model(args.model)
    prompts = [s["conversations"][0]["value"] for s in samples]
    answers = generate(model, processor, [Query(p) for p in prompts], max_new_tokens=32,
                       batch_size=args.batch_size, progress=True)
    exact = hit = other = 0
    for s, prompt, answer in zip(samples, prompts, answers):
        gt = s["conversations"][1]["value"]
        listed = re.findall(r"\[[^\]]*\]", prompt)
        exact += answer == gt
        pred = parse_boxes(answer)
        if len(pred) == 0:
            continue
        ious = box_iou(np.array(pred[:1], dtype=float), np.array([parse_boxes(b)[0] for b in listed]))[0]
        best = int(ious.argmax())
        hit += bool(ious[listed.index(gt)] >= 0.5)
        other += bool(ious[best] >= 0.5 and listed[best] != gt)
    n = len(samples)
    print(f"{args.model}: list2box exact {exact / n:.1%}, IoU>=0.5 {hit / n:.1%}, "
          f"another listed object {other / n:.1%} (n={n})")


if __name__ == "__main__":
    main()
