"""Where the time of one tiny-model training step goes on a CPU: data (image decode + processor), collation,
forward and backward, for each intra-op thread count and each image-token merge asked for (``--merges 1,2``:
one LLM token per k x k patches, TinyGGConfig.image_token_merge). Prints milliseconds per step for each part
and the speed of every setting as a ratio to the first one (the baseline), measured in the same run.

    python bench/train_speed.py --data runs/demo/data/synth_single/train.json --batch 8 --steps 20 --threads 1,2
    python bench/train_speed.py --data runs/demo/data/synth_single/train.json --threads 1 --merges 1,2
"""

from __future__ import annotations

import argparse
import time

import torch

from tinygg.build import build_model
from tinygg.data.dataset import Collator, DataSource, SupervisedDataset, mix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="training JSON (images relative to its folder)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts; the first is the baseline")
    ap.add_argument("--merges", default="1", help="comma-separated image_token_merge values (1: one token per patch)")
    ap.add_argument("--freeze-vision", action="store_true", help="no gradients through the towers")
    args = ap.parse_args()
    base = None
    for merge in [int(k) for k in args.merges.split(",")]:
        base = run_setting(args, merge, base)


def run_setting(args: argparse.Namespace, merge: int, base: float | None) -> float:
    torch.manual_seed(0)
    model, processor = build_model("tiny", image_token_merge=merge)
    if args.freeze_vision:
        model.model.vision_tower.requires_grad_(False)
    model.set_attn_implementation("sdpa")
    items = mix([DataSource(path=args.data)], seed=0)
    ds = SupervisedDataset(items, processor, max_length=2048)
    collate = Collator(processor.tokenizer.pad_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        times = {"data": 0.0, "collate": 0.0, "forward": 0.0, "backward+step": 0.0}
        model.train()
        for step in range(args.steps + 2):
            t0 = time.perf_counter()
            feats = [ds[(step * args.batch + k) % len(ds)] for k in range(args.batch)]
            t1 = time.perf_counter()
            batch = collate(feats)
            t2 = time.perf_counter()
            out = model(**batch)
            t3 = time.perf_counter()
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            t4 = time.perf_counter()
            if step >= 2:  # warm-up steps excluded
                for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    times[k] += dt
        per_step = sum(times.values()) / args.steps
        base = base or per_step
        print(f"params {n_params / 1e6:.2f}M, batch {args.batch}, seq {tuple(batch['input_ids'].shape)}, "
              f"threads {threads}, image_token_merge {merge} ({model.config.num_image_tokens} tokens per image)")
        for k, v in times.items():
            print(f"  {k:14s} {v / args.steps * 1e3:8.1f} ms/step")
        print(f"  whole step     {per_step * 1e3:8.1f} ms/step, {1 / per_step:.2f} steps/s = "
              f"{base / per_step:.2f}x the first setting")
    return base


if __name__ == "__main__":
    main()
