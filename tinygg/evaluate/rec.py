"""Referring expression comprehension (REC): Acc@0.5 per split and their average (the paper's Table 1).

A sample is correct when the first box of the answer has IoU >= 0.5 with the ground-truth box (Ferret,
lmms-eval; Shikra uses > 0.5). The answer's box is normalised to the padded square
(:mod:`tinygg.boxes`); it is mapped to the original image's pixels (corners ordered, clipped to the image,
as the model can only mean the image) and compared with the pixel GT box. An answer without a box is a
miss and is counted as a parse failure.

The same scoring serves a model run (``evaluate_rec``) and predictions that already exist from any
system (``score_predictions``): both go through :func:`score_answer`.

    tinygg eval rec --model checkpoints/tinygg-1.5b --data refer:data/refer --out runs/rec
"""

from __future__ import annotations

import json
import logging
import os
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..boxes import box_iou_aligned, canonical, parse_box, square_to_pixel
from ..draw import GT_COLOR, PRED_COLOR, draw_boxes
from ..inference import Query
from .journal import open_run, write_skipped
from .runner import run_generation
from .sources import BadRow, RecSample, iter_jsonl, select_splits

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "Output the coordinate of <exp>"  # the paper's wording; <exp> is the expression
EXPRESSION_SLOT = "<exp>"
IOU_THRESHOLD = 0.5
HIT_RULE = "IoU >= 0.5"
METRIC_NOTE = ("Acc@0.5: a prediction is correct when IoU(pred, GT) >= 0.5 (the first box of the answer, in "
               "original image pixels); an answer without a box counts as a miss (parse failure).")
BOX_FORMATS = ("square", "image", "pixel", "grid1000")
ID_FIELDS = ("id", "question_id", "sample_id", "ref_id")
TEXT_FIELDS = ("answer", "text", "prediction", "pred", "output", "response")


@dataclass(frozen=True)
class RecScore:
    """The verdict on one answer: the predicted pixel box (None when none was parsed), IoU and hit."""

    pred_box: list[float] | None
    iou: float
    hit: bool
    parsed: bool


def answer_box_to_pixels(box: np.ndarray, width: int, height: int, box_format: str = "square") -> np.ndarray:
    """A parsed answer box (4,) -> pixel ``[x1,y1,x2,y2]`` clipped to the image, corners ordered.

    ``box_format``: ``square`` (this project and GroundingGPT/Shikra: normalised to the padded square),
    ``image`` (normalised to the image's own width and height, as lmms-eval's prompt asks), ``pixel``
    (absolute pixels, Qwen2.5-VL) or ``grid1000`` (integers 0-1000 relative to the image, Qwen-VL/Qwen3-VL).
    """
    b = canonical(box)
    if box_format == "square":
        return square_to_pixel(b, width, height)
    scale = {"image": 1.0, "pixel": None, "grid1000": 1000.0}
    if box_format not in scale:
        raise ValueError(f"box format must be one of {BOX_FORMATS}; got {box_format!r}")
    if scale[box_format] is not None:
        b = b / scale[box_format] * np.array([width, height, width, height], dtype=np.float64)
    return np.clip(b, 0, [width, height, width, height])


def score_answer(answer: str, gt_box: Sequence[float], width: int, height: int,
                 threshold: float = IOU_THRESHOLD, box_format: str = "square") -> RecScore:
    """Score a model's answer against a pixel GT box ``[x1,y1,x2,y2]`` of a ``width x height`` image."""
    box = parse_box(answer)
    if box is None:
        return RecScore(None, 0.0, False, False)
    pred = answer_box_to_pixels(box, width, height, box_format)  # (4,) pixels, clipped to the image
    iou = float(box_iou_aligned(pred, np.asarray(gt_box, dtype=np.float64)))
    return RecScore([float(v) for v in pred], iou, iou >= threshold, True)


def make_prompt(template: str, expression: str) -> str:
    if EXPRESSION_SLOT not in template:
        raise ValueError(f"--prompt must contain {EXPRESSION_SLOT} where the expression goes; "
                         f"got {template!r}")
    return template.replace(EXPRESSION_SLOT, expression)


def rec_row(sample: RecSample, answer: str, prompt: str | None = None,
            box_format: str = "square") -> dict[str, Any]:
    """The predictions.jsonl line of one answered sample."""
    s = score_answer(answer, sample.bbox, sample.width, sample.height, box_format=box_format)
    return {"id": sample.id, "split": sample.split, "expression": sample.expression,
            "image": sample.image_name, "width": sample.width, "height": sample.height,
            "gt_box": list(sample.bbox), "prompt": prompt, "answer": answer, "pred_box": s.pred_box,
            "iou": s.iou, "hit": s.hit, "parsed": s.parsed}


def summarise(rows: Iterable[dict], threshold: float = IOU_THRESHOLD) -> dict[str, Any]:
    """``metrics.json``: per split ``acc`` (a fraction), ``n``, ``parse_failures``; ``average`` = mean of the
    split accuracies (unweighted, as the paper's Avg column; None without any scored sample)."""
    per: dict[str, dict[str, int]] = {}
    for r in rows:
        s = per.setdefault(r["split"], {"hits": 0, "n": 0, "parse_failures": 0})
        s["n"] += 1
        s["hits"] += bool(r["hit"])
        s["parse_failures"] += not r["parsed"]
    splits = {name: {"acc": v["hits"] / v["n"], "n": v["n"], "parse_failures": v["parse_failures"],
                     "hits": v["hits"]} for name, v in sorted(per.items())}
    average = float(np.mean([v["acc"] for v in splits.values()])) if splits else None
    return {"metric": "acc@0.5", "iou_threshold": threshold, "hit_rule": HIT_RULE, "splits": splits,
            "average": average, "note": METRIC_NOTE}


def write_metrics(out_dir: Path, metrics: dict, problems: Sequence[BadRow]) -> dict[str, Any]:
    """Write ``metrics.json`` (with the count of skipped rows) and ``skipped.jsonl``; the metrics written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = dict(metrics, skipped_rows=len(problems))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_skipped(out_dir, problems)
    return metrics


def evaluate_rec(model, processor, samples: Sequence[RecSample], out_dir: str | os.PathLike, *,
                 prompt: str = DEFAULT_PROMPT, batch_size: int = 8, max_new_tokens: int = 32, vis: int = 0,
                 problems: list[BadRow] | None = None, settings: dict | None = None, fresh: bool = False,
                 progress: bool = True, gen_kwargs: dict | None = None) -> dict[str, Any]:
    """Answer every sample (resuming from ``out_dir/predictions.jsonl``), score, write ``metrics.json``.

    ``settings`` (e.g. the model path) go into ``run.json`` with the prompt and ``max_new_tokens``; a resumed
    run must match them.
    """
    out = Path(out_dir)
    problems = problems if problems is not None else []
    make_prompt(prompt, "x")  # validate the template before any work
    settings = dict(settings or {}, prompt=prompt, max_new_tokens=max_new_tokens)
    journal = open_run(out, settings, fresh=fresh)

    def build(sample: RecSample) -> Query:
        return Query(prompt=make_prompt(prompt, sample.expression), images=[sample.load_image()])

    def row(sample: RecSample, query: Query, answer: str) -> dict:
        return rec_row(sample, answer, prompt=query.prompt)

    done = run_generation(model, processor, samples, build, row, journal, problems, batch_size=batch_size,
                          max_new_tokens=max_new_tokens, length=lambda s: len(s.expression),
                          progress=progress, gen_kwargs=gen_kwargs)
    # scored again from the stored answer text against the current GT: the metric never trusts stored verdicts
    rows = [rec_row(s, done[s.key]["answer"], done[s.key].get("prompt")) for s in samples if s.key in done]
    metrics = write_metrics(out, dict(summarise(rows), run=settings), problems)
    if vis:
        by_key = {(r["split"], r["id"]): r for r in rows}
        draw_overlays([s for s in samples if s.key in by_key][:vis], by_key, out / "vis")
    return metrics


# ------------------------------------------------------------------------------------- existing predictions


def _first(rec: dict, fields: Sequence[str]) -> tuple[str | None, Any]:
    for f in fields:
        if f in rec:
            return f, rec[f]
    return None, None


def score_predictions(path: str | os.PathLike, samples: Sequence[RecSample] | None, problems: list[BadRow],
                      box_format: str = "square") -> tuple[list[dict], list[RecSample]]:
    """Scored rows of a predictions JSONL file from any system, and the samples they answer.

    Each line needs an id (one of ``id``, ``question_id``, ``sample_id``, ``ref_id``) and the answer text
    (one of ``answer``, ``text``, ``prediction``, ``pred``, ``output``, ``response``); ``split`` is needed
    only when an id occurs in several splits. With ``samples`` (from ``--data``) the GT comes from the
    data; without, each line must carry ``split``, ``gt_box`` (pixels), ``width`` and ``height`` as
    ``tinygg eval rec`` writes them. ``box_format`` says how the other system writes boxes
    (:func:`answer_box_to_pixels`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictions file not found: {path}")
    by_key = {s.key: s for s in samples or []}
    by_id: dict[str, list[RecSample]] = {}
    for s in samples or []:
        by_id.setdefault(s.id, []).append(s)
    rows: dict[tuple[str, str], dict] = {}
    used: dict[tuple[str, str], RecSample] = {}
    file = str(path)
    for n, rec in iter_jsonl(path, problems):
        id_field, sid = _first(rec, ID_FIELDS)
        text_field, text = _first(rec, TEXT_FIELDS)
        if id_field is None:
            problems.append(BadRow(file, n, "id", f"missing (one of {list(ID_FIELDS)})"))
            continue
        if text_field is None or not isinstance(text, str):
            problems.append(BadRow(file, n, text_field or "answer",
                                   f"expected the answer text in one of {list(TEXT_FIELDS)}; got {text!r}"))
            continue
        sid = str(sid)
        split = rec.get("split")
        if samples is not None:
            if split is not None:
                sample = by_key.get((str(split), sid))
                if sample is None:  # "val" for "refcoco_val": accept when it names one sample
                    cands = [c for c in by_id.get(sid, []) if select_splits([c.split], [str(split)])]
                    sample = cands[0] if len(cands) == 1 else None
            else:
                cands = by_id.get(sid, [])
                if len(cands) > 1:
                    problems.append(BadRow(file, n, "split", f"id {sid!r} occurs in splits "
                                                             f"{[c.split for c in cands]}; add a 'split' "
                                                             "field"))
                    continue
                sample = cands[0] if cands else None
            if sample is None:
                problems.append(BadRow(file, n, id_field,
                                       f"{sid!r} (split {split!r}) is not a sample of --data"))
                continue
        else:
            sample = _sample_from_row(rec, sid, file, n, problems)
            if sample is None:
                continue
        rows[sample.key] = rec_row(sample, text, prompt=rec.get("prompt"), box_format=box_format)
        used[sample.key] = sample
    if samples is not None:
        missing = [s for s in samples if s.key not in rows]
        if missing:
            logger.warning("%d of %d samples of --data have no prediction in %s; they are left out of the "
                           "scores (n counts scored samples)", len(missing), len(samples), path)
    order = [s.key for s in samples] if samples is not None else list(rows)
    return [rows[k] for k in order if k in rows], [used[k] for k in order if k in used]


def _sample_from_row(rec: dict, sid: str, file: str, n: int, problems: list[BadRow]) -> RecSample | None:
    for field in ("split", "gt_box", "width", "height"):
        if field not in rec:
            problems.append(BadRow(file, n, field, "missing: without --data each line must carry split, "
                                                   "gt_box (pixels [x1,y1,x2,y2]), width and height"))
            return None
    try:
        width, height = int(rec["width"]), int(rec["height"])
        box = [float(v) for v in rec["gt_box"]]
        if len(box) != 4 or width <= 0 or height <= 0:
            raise ValueError("need 4 numbers and a positive size")
    except (TypeError, ValueError) as e:
        problems.append(BadRow(file, n, "gt_box", f"expected [x1,y1,x2,y2] pixels with width/height: {e}"))
        return None
    image = rec.get("image")
    return RecSample(id=sid, split=str(rec["split"]), expression=str(rec.get("expression", "")),
                     bbox=(box[0], box[1], box[2], box[3]), width=width, height=height,
                     image_path=image if isinstance(image, str) and os.path.isfile(image) else None,
                     source_file=file, source_row=n)


def score_existing(path: str | os.PathLike, out_dir: str | os.PathLike, samples: Sequence[RecSample] | None,
                   problems: list[BadRow], vis: int = 0, box_format: str = "square") -> dict[str, Any]:
    """``--predictions``: score a file with the same parser and metric; write metrics + scored rows."""
    if box_format not in BOX_FORMATS:
        raise ValueError(f"--box-format must be one of {BOX_FORMATS}; got {box_format!r}")
    rows, used = score_predictions(path, samples, problems, box_format=box_format)
    if not rows:
        raise ValueError(f"{path}: no scorable predictions ({len(problems)} bad rows; first: "
                         f"{problems[0] if problems else '-'})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scored = out / "predictions.jsonl"
    if scored.resolve() == Path(path).resolve():
        raise ValueError(f"--out {out} would overwrite the predictions being scored; choose another --out")
    scored.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    metrics = dict(summarise(rows), predictions=str(path), box_format=box_format)
    metrics = write_metrics(out, metrics, problems)
    if vis:
        drawable = [s for s in used if s.image_path or s.image_bytes][:vis]
        draw_overlays(drawable, {(r["split"], r["id"]): r for r in rows}, out / "vis")
    return metrics


# ---------------------------------------------------------------------------------------------- overlays


def draw_overlays(samples: Sequence[RecSample], rows: dict[tuple[str, str], dict],
                  folder: Path) -> list[Path]:
    """One PNG per sample: GT box in green, predicted box in red, the expression and IoU underneath."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for s in samples:
        r = rows[s.key]
        try:
            image = s.load_image()
        except (FileNotFoundError, ValueError) as e:
            logger.warning("no overlay for %s: %s", s.where, e)
            continue
        drawn = draw_boxes(image, [s.bbox], labels=["GT"], color=GT_COLOR)
        if r.get("pred_box"):
            drawn = draw_boxes(drawn, [r["pred_box"]], labels=["pred"], color=PRED_COLOR)
        verdict = ("no box parsed" if not r["parsed"]
                   else f"IoU {r['iou']:.3f} ({'hit' if r['hit'] else 'miss'})")
        path = folder / f"{_safe(s.split)}_{_safe(s.id)}.png"
        _with_caption(drawn, f"{s.expression} | {verdict}").save(path)
        written.append(path)
    return written


def _with_caption(image: Image.Image, text: str) -> Image.Image:
    """``image`` above a white strip holding ``text``, wrapped to the image's width (PIL's default font)."""
    lines = textwrap.wrap(text, width=max(8, (image.width - 6) // 6)) or [""]
    canvas = Image.new("RGB", (image.width, image.height + 12 * len(lines) + 4), (255, 255, 255))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(lines):
        draw.text((3, image.height + 2 + 12 * k), line, fill=(0, 0, 0))
    return canvas


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+_.-]", "_", text)[:80]
