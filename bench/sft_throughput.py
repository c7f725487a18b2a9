"""SFT throughput: the project's batching and feature cache against plain baselines, measured in one run.

    python bench/sft_throughput.py [--steps 30] [--preset tiny]

1. Tokens/s (real, non-pad tokens through forward + backward) with length-grouped batches against plain
   random pad-to-longest batches, on a corpus mixing short REC answers and long descriptions.
   Goal: >= 1.5x.
2. Stage-1 step time (projector-only training) with the frozen-tower feature cache against running the
   towers (and decoding the JPEGs) every step. Goal: >= 3x.

Both sides of each ratio use the same model, samples, batch size and number of steps.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from PIL import Image, ImageDraw

from tinygg.build import build_model
from tinygg.data.dataset import Collator, DataSource, SupervisedDataset, length_grouped_batches, mix
from tinygg.data.schema import write_samples
from tinygg.train.config import Freeze, Lora
from tinygg.train.feature_cache import FeatureCache, tower_fingerprint
from tinygg.train.freeze import apply_freeze

WORDS = ["the", "a", "red", "blue", "small", "large", "cube", "sphere", "cylinder", "left", "right", "of", "behind",
         "metal", "rubber", "shiny", "next", "to"]


def make_corpus(root: Path, n: int, seed: int = 0) -> Path:
    """COCO-like JPEGs (640x480) and a mix of short REC samples and long descriptions."""
    rng = random.Random(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        im = Image.new("RGB", (640, 480), tuple(rng.randrange(256) for _ in range(3)))
        d = ImageDraw.Draw(im)
        for _ in range(6):
            x, y = rng.randrange(560), rng.randrange(400)
            d.ellipse([x, y, x + 80, y + 80], fill=tuple(rng.randrange(256) for _ in range(3)))
        im.save(root / "img" / f"{i}.jpg", quality=90)
        if rng.random() < 0.7:  # short: expression -> box
            q, a = "Output the coordinate of the red cube.", "[0.120,0.340,0.560,0.780]"
        else:  # long: a grounding description
            q = "Describe the image in detail."
            a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 400)))
        samples.append({"id": str(i), "image": f"img/{i}.jpg",
                        "conversations": [{"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}]})
    return write_samples(samples, root / "train.json")


def train_steps(model, dataset, batches, collate, optimizer) -> tuple[float, int]:
    """Seconds for the given batches (forward + backward + step) and the real tokens they held."""
    tokens = 0
    start = time.perf_counter()
    for idx in batches:
        batch = collate([dataset[i] for i in idx])
        tokens += int(batch["attention_mask"].sum())
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--preset", default="tiny")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_corpus(root, args.samples)
        model, processor = build_model(args.preset)
        collate = Collator(processor.tokenizer.pad_token_id)
        items = mix([DataSource(str(data))])

        # 1. batching: length-grouped vs random, full LLM + projector training
        ds = SupervisedDataset(items, processor)
        m = apply_freeze(model, Freeze(vision="frozen", projector="full", llm="full"), Lora())
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5)
        rng = np.random.default_rng(0)
        bs, steps = args.batch_size, args.steps
        grouped = length_grouped_batches(ds.lengths, bs, seed=0)[:steps]
        plain = [rng.permutation(len(ds))[:bs].tolist() for _ in range(steps)]
        train_steps(m, ds, plain[:2], collate, opt)  # warm-up
        t_plain, tok_plain = train_steps(m, ds, plain, collate, opt)
        t_group, tok_group = train_steps(m, ds, grouped, collate, opt)
        r1 = (tok_group / t_group) / (tok_plain / t_plain)
        print(f"[batching] plain random pad-to-longest: {tok_plain / t_plain:8.0f} tokens/s")
        print(f"[batching] length-grouped:              {tok_group / t_group:8.0f} tokens/s")
        print(f"[batching] ratio {r1:.2f}x (goal >= 1.5x)")

        # 2. stage-1 step time: projector only, towers run every step vs cached features
        m = apply_freeze(model, Freeze(vision="frozen", projector="full", llm="frozen"), Lora())
        opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
        short = [i for i, (s, _) in enumerate(items) if len(s.text()) < 200]
        batches = [rng.choice(short, bs, replace=False).tolist() for _ in range(steps)]
        t_raw, _ = train_steps(m, ds, batches, collate, opt)
        cache = FeatureCache(root / "cache", tower_fingerprint(model.model.vision_tower, model.config.image_size))
        cached = SupervisedDataset(items, processor, feature_cache=cache)
        t0 = time.perf_counter()
        cache.fill(cached, model.model.vision_tower)
        t_fill = time.perf_counter() - t0
        t_cache, _ = train_steps(m, cached, batches, collate, opt)
        r2 = t_raw / t_cache
        print(f"[stage 1] towers every step: {1000 * t_raw / steps:7.1f} ms/step")
        print(f"[stage 1] feature cache:     {1000 * t_cache / steps:7.1f} ms/step "
              f"(one-off fill: {t_fill:.1f} s for {len(items)} pictures)")
        print(f"[stage 1] ratio {r2:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
