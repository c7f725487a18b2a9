"""DiG evaluation: score predicted answers against pair records, by difficulty and by change kind, with
overlays of ground truth against predictions.

The scoring is :func:`dig.rewards.score_batch`, the very code GRPO trains on, so the evaluation metric and
the reward cannot drift apart. Scoring needs no model: ``score_predictions(records, texts, cfg)``.

Metrics of a group of pairs (all pairs, one difficulty)
-------------------------------------------------------
* ``precision`` / ``recall`` / ``f1``: detection-level, micro-averaged: hits over all predicted boxes, hits
  over all GT boxes, and their harmonic mean (an empty side scores 1 only if the other is empty too, as
  in the reward);
* ``mean_iou``: mean IoU over all Hungarian-matched pairs of the group, hits or not (None without pairs);
* ``all_found``: share of pairs answered perfectly (per-pair F1 = 1: every difference, nothing else);
* ``format``, ``sample_f1``, ``sample_iou``, ``reward``: means of the per-pair reward components;
* counts ``n`` (pairs), ``n_gt``, ``n_pred``, ``n_hit``.

By change kind (``boxes[i]`` belongs to ``changes[i]``): ``n_gt``, ``hits``, ``recall`` (which GT boxes of
that kind were matched with IoU >= tau) and ``mean_iou`` (over that kind's GT boxes, 0 when unmatched).
Precision has no kind: a predicted box names none.

Files written by :func:`write_report`: ``metrics.json`` (the summary), ``per_sample.jsonl`` (one row per
pair, predicted boxes in pixels) and ``vis/<id>.png`` overlays (image A | image B; GT green with its kind,
predictions blue when a hit, red otherwise).

    tinygg eval dig --pairs runs/dig/test --predictions preds.jsonl --out runs/dig/eval --vis 16
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dig.rewards import BatchScores, RewardConfig, score_batch, unit_to_pixel
from tinygg.evaluate.rec import ID_FIELDS, TEXT_FIELDS
from tinygg.evaluate.sources import BadRow, iter_jsonl

logger = logging.getLogger(__name__)

GT_COLOUR, HIT_COLOUR, MISS_COLOUR = (0, 200, 0), (40, 110, 255), (230, 30, 30)
PANEL_GAP, HEADER = 8, 18


# ---------------------------------------------------------------------------------------------- input


def read_predictions(path: str | Path) -> dict[str, str]:
    """``{id: answer}`` from a JSONL file, one ``{"id": ..., "answer": ...}`` per line (the id and text fields
    are read under the names ``tinygg eval rec`` accepts); bad lines raise, naming the file, row and field."""
    problems: list[BadRow] = []
    out: dict[str, str] = {}
    for lineno, row in iter_jsonl(path, problems):
        id_key = next((k for k in ID_FIELDS if k in row), None)
        text_key = next((k for k in TEXT_FIELDS if k in row), None)
        if id_key is None:
            problems.append(BadRow(str(path), lineno, "id", f"no id field (one of {ID_FIELDS}); keys {sorted(row)}"))
        elif text_key is None or not isinstance(row[text_key], str):
            problems.append(BadRow(str(path), lineno, text_key or "answer",
                                   f"expected the answer text as a string (field one of {TEXT_FIELDS})"))
        elif str(row[id_key]) in out:
            problems.append(BadRow(str(path), lineno, id_key, f"id {row[id_key]!r} appears twice"))
        else:
            out[str(row[id_key])] = row[text_key]
    if problems:
        raise ValueError(f"{len(problems)} bad line(s) in predictions file: " + "; ".join(map(str, problems[:5])))
    return out


def record_size(record: Mapping[str, Any]) -> tuple[int, int]:
    """(width, height) of a pair record: its ``width``/``height`` fields, else read from ``image_a``."""
    if "width" in record and "height" in record:
        return int(record["width"]), int(record["height"])
    with Image.open(record["image_a"]) as img:
        return img.size


def align_predictions(records: Sequence[Mapping[str, Any]], predictions: Mapping[str, str],
                      allow_missing: bool = False) -> tuple[list[str], list[str]]:
    """The text for each record, in order, and the ids that had none (scored as an empty answer only when
    ``allow_missing``; otherwise a missing prediction raises)."""
    missing = [r["id"] for r in records if r["id"] not in predictions]
    if missing and not allow_missing:
        raise ValueError(f"{len(missing)} of {len(records)} pairs have no prediction (first: {missing[:5]}); "
                         f"generate them, or pass --allow-missing to score them as empty answers")
    extra = set(predictions) - {r["id"] for r in records}
    if extra:
        logger.warning("%d predictions name no pair of the set (first: %s); ignored", len(extra), sorted(extra)[:5])
    return [predictions.get(r["id"], "") for r in records], missing


# ---------------------------------------------------------------------------------------------- scoring


def _group_metrics(scores: BatchScores, idx: np.ndarray) -> dict[str, Any]:
    n_pred, n_gt, n_hit = (int(getattr(scores, k)[idx].sum()) for k in ("n_pred", "n_gt", "n_hit"))
    precision = n_hit / n_pred if n_pred else float(n_gt == 0)
    recall = n_hit / n_gt if n_gt else float(n_pred == 0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    n_pairs = int(scores.n_pairs[idx].sum())
    mean = (lambda a: float(a[idx].mean()) if len(idx) else None)
    return {
        "n": len(idx), "n_gt": n_gt, "n_pred": n_pred, "n_hit": n_hit,
        "precision": precision, "recall": recall, "f1": f1,
        "mean_iou": float(scores.pair_iou[idx].sum()) / n_pairs if n_pairs else None,
        "all_found": mean((scores.f1 >= 1.0).astype(float)),
        "format": mean(scores.format), "sample_f1": mean(scores.f1), "sample_iou": mean(scores.iou),
        "reward": mean(scores.total),
    }


def score_predictions(records: Sequence[Mapping[str, Any]], texts: Sequence[str],
                      cfg: RewardConfig | None = None) -> dict[str, Any]:
    """Score ``texts[i]`` against ``records[i]`` (DiG pair records): overall, by difficulty, by change kind,
    plus one row per pair (``per_sample``). See the module docstring for the definitions.

    >>> recs = [{"id": "p0", "boxes": [[0, 0, 50, 50]], "changes": [{"kind": "color"}], "difficulty": "single",
    ...          "width": 100, "height": 100}]
    >>> r = score_predictions(recs, ["[[0.0,0.0,0.5,0.5]]"])
    >>> r["overall"]["f1"], r["by_kind"]["color"]["recall"], r["by_difficulty"]["single"]["n"]
    (1.0, 1.0, 1)
    """
    cfg = cfg or RewardConfig()
    if len(records) != len(texts):
        raise ValueError(f"score_predictions: {len(records)} records but {len(texts)} texts")
    for i, r in enumerate(records):
        if len(r["boxes"]) != len(r.get("changes", r["boxes"])):
            raise ValueError(f"pair {r.get('id', i)!r}: {len(r['boxes'])} boxes for {len(r['changes'])} changes "
                             f"(boxes[i] must belong to changes[i])")
    sizes = [record_size(r) for r in records]
    scores = score_batch(list(texts), [r["boxes"] for r in records], sizes, cfg)

    by_difficulty: dict[str, list[int]] = defaultdict(list)
    kind_gt: dict[str, list[tuple[bool, float]]] = defaultdict(list)
    rows = []
    for i, (rec, text, (w, h)) in enumerate(zip(records, texts, sizes)):
        by_difficulty[str(rec.get("difficulty", "all"))].append(i)
        s = scores.sample(i)
        kinds = [str(c.get("kind", "?")) for c in rec.get("changes", [])] or ["?"] * s.n_gt
        for kind, hit, iou in zip(kinds, s.gt_hit.tolist(), s.gt_iou.tolist()):
            kind_gt[kind].append((hit, iou))
        rows.append({
            "id": rec.get("id", str(i)), "difficulty": rec.get("difficulty"), "text": text,
            **{("reward" if k == "total" else k): round(v, 6) for k, v in s.components().items()},
            "n_pred": s.n_pred, "n_gt": s.n_gt, "n_hit": s.n_hit,
            "pred_boxes": np.round(unit_to_pixel(s.pred_unit, w, h, cfg.box_format), 2).tolist(),
            "pred_hit": s.pred_hit.tolist(), "gt_hit": s.gt_hit.tolist(),
            "gt_iou": np.round(s.gt_iou, 6).tolist(), "kinds": kinds,
        })

    all_idx = np.arange(len(records))
    return {
        "config": asdict(cfg),
        "overall": _group_metrics(scores, all_idx),
        "by_difficulty": {d: _group_metrics(scores, np.asarray(ix)) for d, ix in sorted(by_difficulty.items())},
        "by_kind": {k: {"n_gt": len(v), "hits": sum(h for h, _ in v), "recall": sum(h for h, _ in v) / len(v),
                        "mean_iou": sum(u for _, u in v) / len(v)} for k, v in sorted(kind_gt.items())},
        "per_sample": rows,
    }


# ---------------------------------------------------------------------------------------------- output


def draw_overlay(record: Mapping[str, Any], row: Mapping[str, Any], path: str | Path) -> Path:
    """Image A | image B side by side, GT boxes (green, with their kind) and predicted boxes (blue when a
    hit, red otherwise) on both, and a header with the pair's scores; saved as PNG at ``path``."""
    with Image.open(record["image_a"]) as a_img, Image.open(record["image_b"]) as b_img:
        a, b = a_img.convert("RGB"), b_img.convert("RGB")
    w, h = a.size
    canvas = Image.new("RGB", (2 * w + PANEL_GAP, h + HEADER), (255, 255, 255))
    canvas.paste(a, (0, HEADER))
    canvas.paste(b.resize((w, h)) if b.size != (w, h) else b, (w + PANEL_GAP, HEADER))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), f"{row['id']}  F1 {row['f1']:.2f}  IoU {row['iou']:.2f}  format {row['format']:.0f}  "
                      f"{row['n_hit']}/{row['n_gt']} found, {row['n_pred']} predicted", fill=(0, 0, 0))
    for dx in (0, w + PANEL_GAP):
        for box, kind in zip(record["boxes"], row["kinds"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            draw.rectangle([x1 + dx, y1 + HEADER, x2 + dx, y2 + HEADER], outline=GT_COLOUR, width=2)
            draw.text((x1 + dx + 2, y1 + HEADER + 1), kind, fill=GT_COLOUR)
        for box, hit in zip(row["pred_boxes"], row["pred_hit"]):
            x1, y1, x2, y2 = box
            draw.rectangle([x1 + dx, y1 + HEADER, x2 + dx, y2 + HEADER],
                           outline=HIT_COLOUR if hit else MISS_COLOUR, width=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def format_table(result: Mapping[str, Any]) -> str:
    """The summary as a plain-text table: one line per difficulty and the total, then one per kind."""
    def num(v: float | None) -> str:
        return "   -  " if v is None else f"{100 * v:6.2f}"

    lines = [f"{'difficulty':<12}{'pairs':>6}{'P':>8}{'R':>8}{'F1':>8}{'mIoU':>8}{'all':>8}{'format':>8}{'reward':>8}"]
    groups = list(result["by_difficulty"].items()) + [("total", result["overall"])]
    for name, m in groups:
        lines.append(f"{name:<12}{m['n']:>6}{num(m['precision']):>8}{num(m['recall']):>8}{num(m['f1']):>8}"
                     f"{num(m['mean_iou']):>8}{num(m['all_found']):>8}{num(m['format']):>8}"
                     f"{m['reward'] if m['reward'] is not None else float('nan'):>8.3f}")
    lines.append(f"\n{'change kind':<12}{'boxes':>6}{'recall':>8}{'mIoU':>8}")
    for kind, m in result["by_kind"].items():
        lines.append(f"{kind:<12}{m['n_gt']:>6}{num(m['recall']):>8}{num(m['mean_iou']):>8}")
    return "\n".join(lines)


def write_report(result: Mapping[str, Any], records: Sequence[Mapping[str, Any]], out: str | Path,
                 vis: int = 0) -> Path:
    """Write ``metrics.json``, ``per_sample.jsonl`` and the first ``vis`` overlays under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in result.items() if k != "per_sample"}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(out / "per_sample.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in result["per_sample"])
    for rec, row in list(zip(records, result["per_sample"]))[:max(vis, 0)]:
        draw_overlay(rec, row, out / "vis" / f"{row['id']}.png")
    return out / "metrics.json"
