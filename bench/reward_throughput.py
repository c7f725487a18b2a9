"""Throughput of the DiG reward: the batched scorer (dig.rewards.score_batch) against a plain per-sample
pure-Python implementation of the same reward (loops, floats, a hand-written Hungarian; no numpy/scipy).

Both score the same random completions (0-6 boxes near the GT, duplicates, swapped corners, boxes out
of frame, thinking, garbage text); the script checks that every component agrees (allclose) and prints
completions per second of CPU time (``time.process_time``, best of ``--repeats`` runs, so that other
processes on a shared machine do not skew the ratio) and the ratio (goal: >= 10x).

    python bench/reward_throughput.py [--n 20000] [--box-format norm] [--seed 0] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import time

import numpy as np

from dig.rewards import IOU_TOLERANCE, RewardConfig, answer_text, completion_text, format_reward, score_batch
from tinygg.boxes import BOX_PATTERN, square_geometry

SIZES = [(320, 240), (480, 320), (240, 320)]


# ---------------------------------------------------------------------------------------------- baseline


def _hungarian(cost: list[list[float]]) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one assignment of a rectangular cost matrix (pure Python, O(n^2 m)).

    Shortest augmenting paths with row/column potentials; rows <= columns (transposed otherwise).
    """
    n, m = len(cost), len(cost[0])
    if n > m:
        return [(r, c) for c, r in _hungarian([[cost[r][c] for r in range(n)] for c in range(m)])]
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)
    owner = [0] * (m + 1)  # owner[j]: 1-based row assigned to column j (0: free)
    for row in range(1, n + 1):
        owner[0] = row
        j0 = 0
        dist, prev, seen = [inf] * (m + 1), [0] * (m + 1), [False] * (m + 1)
        while True:
            seen[j0] = True
            i0, delta, j1 = owner[j0], inf, 0
            for j in range(1, m + 1):
                if not seen[j]:
                    reduced = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if reduced < dist[j]:
                        dist[j], prev[j] = reduced, j0
                    if dist[j] < delta:
                        delta, j1 = dist[j], j
            for j in range(m + 1):
                if seen[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    dist[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = prev[j0]
            owner[j0] = owner[j1]
            j0 = j1
    return sorted((owner[j] - 1, j - 1) for j in range(1, m + 1) if owner[j])


def _iou_giou(a: list[float], b: list[float]) -> tuple[float, float]:
    area_a = max(a[2] - a[0], 0.0) * max(a[3] - a[1], 0.0)
    area_b = max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    union = area_a + area_b - inter
    enclosing = (max(max(a[2], b[2]) - min(a[0], b[0]), 0.0) * max(max(a[3], b[3]) - min(a[1], b[1]), 0.0))
    iou = inter / max(union, 1e-12)
    return iou, iou - (enclosing - union) / max(enclosing, 1e-12)


def _canon(b: list[float]) -> list[float]:
    return [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])]


def plain_score(completion: object, gt: list[list[float]], size: tuple[int, int], cfg: RewardConfig) -> dict:
    """The reward of one completion, computed with plain Python loops."""
    width, height = size
    answer = answer_text(completion_text(completion))
    fmt = format_reward(answer, cfg, width, height)
    boxes = []
    for m in BOX_PATTERN.finditer(answer):
        vals = [float(g) for g in m.groups()]
        if all(math.isfinite(v) for v in vals):
            boxes.append(vals)
    n_pred = len(boxes)
    if cfg.box_format == "norm":
        sx = sy = 1.0
    elif cfg.box_format == "qwen1000":
        sx = sy = 1000.0
    else:
        sx, sy = float(width), float(height)
    preds = [_canon([b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy]) for b in boxes[:cfg.max_boxes]]
    if cfg.box_format == "norm":
        side, ox, oy = square_geometry(width, height)
        gts = [_canon([(g[0] + ox) / side, (g[1] + oy) / side, (g[2] + ox) / side, (g[3] + oy) / side]) for g in gt]
    else:
        gts = [_canon([g[0] / width, g[1] / height, g[2] / width, g[3] / height]) for g in gt]
    n_gt = len(gts)
    n_hit, iou_sum = 0, 0.0
    if preds and gts:
        cost, ious = [], []
        for p in preds:
            cost_row, iou_row = [], []
            for g in gts:
                iou, giou = _iou_giou(p, g)
                l1 = sum(abs(p[k] - g[k]) for k in range(4))
                cost_row.append(cfg.lambda_l1 * l1 - cfg.lambda_giou * giou)
                iou_row.append(iou)
            cost.append(cost_row)
            ious.append(iou_row)
        for r, c in _hungarian(cost):
            iou_sum += ious[r][c]
            n_hit += ious[r][c] >= cfg.tau - IOU_TOLERANCE
    precision = n_hit / n_pred if n_pred else float(n_gt == 0)
    recall = n_hit / n_gt if n_gt else float(n_pred == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    denom = {"matched": min(len(preds), n_gt), "gt": n_gt, "max": max(n_pred, n_gt)}[cfg.iou_mode]
    iou = iou_sum / denom if denom else float(n_pred == 0 and n_gt == 0)
    if cfg.accuracy_requires_format:
        f1, iou = f1 * fmt, iou * fmt
    total = cfg.w_format * fmt + cfg.w_f1 * f1 + cfg.w_iou * iou
    return {"format": fmt, "precision": precision, "recall": recall, "f1": f1, "iou": iou, "total": total}


# ---------------------------------------------------------------------------------------------- data


def random_batch(n: int, cfg: RewardConfig, seed: int) -> tuple[list, list, list]:
    """``n`` random (completion, GT pixel boxes, image size) triples, mixing good answers and junk."""
    rng = random.Random(seed)
    completions, gts, sizes = [], [], []
    for _ in range(n):
        w, h = rng.choice(SIZES)
        gt = []
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4])):
            x1, y1 = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
            gt.append([round(x1), round(y1), round(min(w, x1 + rng.uniform(8, 90))),
                       round(min(h, y1 + rng.uniform(8, 90)))])
        side, ox, oy = square_geometry(w, h)
        preds = []
        for _ in range(rng.randint(0, 6)):
            if gt and rng.random() < 0.7:  # near a GT box (maybe a duplicate of an earlier one)
                g = rng.choice(gt)
                px = [c + rng.gauss(0, 6) for c in g]
            else:
                x1, y1 = rng.uniform(-10, w), rng.uniform(-10, h)
                px = [x1, y1, x1 + rng.uniform(1, 80), y1 + rng.uniform(1, 80)]
            if rng.random() < 0.1:
                px = [px[2], px[3], px[0], px[1]]  # swapped corners
            if cfg.box_format == "norm":
                b = [(px[0] + ox) / side, (px[1] + oy) / side, (px[2] + ox) / side, (px[3] + oy) / side]
                preds.append("[" + ",".join(f"{v:.3f}" for v in b) + "]")
            elif cfg.box_format == "qwen1000":
                b = [px[0] / w * 1000, px[1] / h * 1000, px[2] / w * 1000, px[3] / h * 1000]
                preds.append("[" + ", ".join(str(round(v)) for v in b) + "]")
            else:
                preds.append("[" + ", ".join(str(round(v)) for v in px) + "]")
        style = rng.random()
        body = "[" + ",".join(preds) + "]"
        if style < 0.55:
            text = body
        elif style < 0.7:
            text = f"<think>I compare the images [0.1,0.1,0.2,0.2].</think>{body}"
        elif style < 0.8:
            text = f"The differences are at {', '.join(preds)}."
        elif style < 0.9:
            text = "".join(rng.choice("[],.0123456789 abc-e") for _ in range(rng.randint(0, 60)))
        else:
            text = [{"role": "assistant", "content": body}]
        completions.append(text)
        gts.append(gt)
        sizes.append((w, h))
    return completions, gts, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="number of random completions")
    parser.add_argument("--box-format", default="norm", choices=["norm", "qwen1000", "pixel"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="time each implementation this many times, keep the best")
    args = parser.parse_args()
    cfg = RewardConfig(box_format=args.box_format)
    completions, gts, sizes = random_batch(args.n, cfg, args.seed)

    score_batch(completions[:64], gts[:64], sizes[:64], cfg)  # warm-up (imports, caches)
    t_fast, t_plain = float("inf"), float("inf")
    for _ in range(args.repeats):  # CPU time, best of several runs: the machine is shared
        # a full collection first, for both sides: otherwise the one due to the objects built above (the random
        # batch: ~0.2 s) lands in whichever timed region happens to allocate next
        gc.collect()
        t0 = time.process_time()
        fast = score_batch(completions, gts, sizes, cfg)
        t_fast = min(t_fast, time.process_time() - t0)
        gc.collect()
        t0 = time.process_time()
        plain = [plain_score(c, g, s, cfg) for c, g, s in zip(completions, gts, sizes)]
        t_plain = min(t_plain, time.process_time() - t0)

    for name in ("format", "precision", "recall", "f1", "iou", "total"):
        ref = np.array([p[name] for p in plain])
        got = getattr(fast, name)
        if not np.allclose(got, ref, atol=1e-9):
            bad = int(np.flatnonzero(~np.isclose(got, ref, atol=1e-9))[0])
            raise SystemExit(f"{name} differs at sample {bad}: batched {got[bad]} vs plain {ref[bad]}; "
                             f"completion {completions[bad]!r}, GT {gts[bad]}, size {sizes[bad]}")
    print(f"{args.n} completions ({args.box_format}); mean total {fast.total.mean():.4f}, "
          f"format {fast.format.mean():.3f}, F1 {fast.f1.mean():.3f}, IoU {fast.iou.mean():.3f}: scores agree")
    print(f"batched : {args.n / t_fast:10.0f} completions/s ({t_fast:.3f} s CPU)")
    print(f"plain   : {args.n / t_plain:10.0f} completions/s ({t_plain:.3f} s CPU)")
    print(f"ratio   : {t_plain / t_fast:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
