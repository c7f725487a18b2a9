"""Throughput of REC evaluation: batched greedy generation (left padding, KV cache) against one prompt at a
time, on the tiny random model, through the evaluator's own generation loop.

Both runs answer the same few dozen REC queries (non-square images, expressions of different lengths); the
script checks that every answer is identical and prints samples per second and the ratio (goal: >= 4x).
Every answer is forced to ``--new-tokens`` tokens (a box is ~30 tokens), since a random model may stop at
once or never; both runs decode the same number of tokens.

    python bench/eval_throughput.py [--n 32] [--batch-size 16] [--new-tokens 24] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tinygg.build import build_model
from tinygg.evaluate.rec import evaluate_rec
from tinygg.evaluate.sources import RecSample

WORDS = ["the", "left", "red", "small", "big", "cube", "sphere", "person", "man", "woman", "dog", "cat",
         "behind", "front", "of", "near", "far", "second"]


def make_samples(n: int, seed: int = 0) -> list[RecSample]:
    """``n`` REC samples with random images of several sizes, stored as PNG files in a temporary folder."""
    rng = np.random.default_rng(seed)
    folder = Path(tempfile.mkdtemp(prefix="eval_bench_"))
    samples = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(40, 160, 2))
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        words = " ".join(rng.choice(WORDS, int(rng.integers(1, 12))))
        x1, y1 = float(rng.integers(0, w // 2)), float(rng.integers(0, h // 2))
        samples.append(RecSample(id=str(i), split="bench", expression=words,
                                 bbox=(x1, y1, x1 + w / 3, y1 + h / 3), width=w, height=h,
                                 image_path=str(path), source_file=str(folder), source_row=i))
    return samples


def timed_run(model, processor, samples, batch_size: int, new_tokens: int) -> tuple[float, dict[str, str]]:
    out = Path(tempfile.mkdtemp(prefix=f"eval_bench_bs{batch_size}_"))
    force = {"min_new_tokens": new_tokens, "suppress_tokens": processor.tokenizer.all_special_ids}
    start = time.perf_counter()
    evaluate_rec(model, processor, samples, out, batch_size=batch_size, max_new_tokens=new_tokens,
                 progress=False, gen_kwargs=force)
    seconds = time.perf_counter() - start
    answers = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        answers[row["id"]] = row["answer"]
    return seconds, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32, help="REC queries")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 by default because on a shared 2-core machine more threads spin "
                         "against other processes and slow both runs down several-fold (0: torch's default)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, processor = build_model("tiny", seed=0)
    model.eval()
    samples = make_samples(args.n)
    timed_run(model, processor, samples[:2], 2, 2)  # warm-up (allocator, kernels)

    t1, a1 = timed_run(model, processor, samples, 1, args.new_tokens)
    tb, ab = timed_run(model, processor, samples, args.batch_size, args.new_tokens)
    if a1 != ab:
        diff = [k for k in a1 if a1[k] != ab.get(k)]
        raise SystemExit(f"batched answers differ from one-by-one answers for {len(diff)} samples, "
                         f"e.g. {diff[:5]}")
    print(f"{args.n} REC queries, {args.new_tokens} new tokens each, tiny model, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"batch size 1:  {t1:7.2f} s  {args.n / t1:7.2f} samples/s")
    print(f"batch size {args.batch_size:<2}: {tb:7.2f} s  {args.n / tb:7.2f} samples/s")
    print(f"answers identical: yes ({len(a1)} samples)")
    print(f"speed-up: {t1 / tb:.2f}x (goal >= 4x)")


if __name__ == "__main__":
    main()
