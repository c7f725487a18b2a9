"""POPE object-hallucination evaluation (the paper's Table 3): yes/no questions in the random, popular and
adversarial subsets; accuracy, precision, recall, F1 (positive = "yes") and the yes-ratio per subset.

An answer's first standalone "yes" or "no" word (any case) is its verdict; an answer with neither counts
as "no" and as unparsed.

    tinygg eval pope --model checkpoints/tinygg-1.5b --questions pope/ --images val2014/ --out runs/pope
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..inference import Query
from ..processor import load_image
from .journal import open_run, write_skipped
from .runner import run_generation
from .sources import BadRow, PopeQuestion

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "<question>\nAnswer the question using a single word or phrase."  # LLaVA's POPE prompt
QUESTION_SLOT = "<question>"
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_yes_no(answer: str) -> tuple[str, bool]:
    """``(verdict, parsed)``: the first yes/no word of ``answer``; ``("no", False)`` when there is none.

    >>> parse_yes_no("Yes, there is a dog."), parse_yes_no("I see no dog"), parse_yes_no("A cat.")
    (('yes', True), ('no', True), ('no', False))
    """
    m = _YES_NO.search(answer or "")
    return (m.group(1).lower(), True) if m else ("no", False)


def binary_metrics(labels: Sequence[str], preds: Sequence[str]) -> dict[str, Any]:
    """Accuracy, precision, recall, F1 (positive = "yes"), yes-ratio and the confusion counts."""
    if len(labels) != len(preds):
        raise ValueError(f"{len(labels)} labels but {len(preds)} predictions")
    tp = sum(lab == "yes" and p == "yes" for lab, p in zip(labels, preds))
    fp = sum(lab == "no" and p == "yes" for lab, p in zip(labels, preds))
    tn = sum(lab == "no" and p == "no" for lab, p in zip(labels, preds))
    fn = sum(lab == "yes" and p == "no" for lab, p in zip(labels, preds))
    n = len(labels)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / n if n else 0.0, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": (tp + fp) / n if n else 0.0, "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def summarise_pope(rows: Sequence[dict]) -> dict[str, Any]:
    """``metrics.json`` of POPE: per subset metrics (fractions) and their unweighted mean."""
    by_subset: dict[str, list[dict]] = {}
    for r in rows:
        by_subset.setdefault(r["subset"], []).append(r)
    subsets = {}
    for name, rs in by_subset.items():
        m = binary_metrics([r["label"] for r in rs], [r["pred"] for r in rs])
        m["unparsed"] = sum(not r["parsed"] for r in rs)
        subsets[name] = m
    keys = ("accuracy", "precision", "recall", "f1", "yes_ratio")
    average = ({k: sum(m[k] for m in subsets.values()) / len(subsets) for k in keys} if subsets else None)
    return {"metric": "pope", "positive": "yes", "subsets": subsets, "average": average,
            "note": "an answer's first yes/no word is its verdict; answers with neither count as 'no' "
                    "(unparsed)"}


def pope_row(q: PopeQuestion, answer: str, prompt: str | None) -> dict[str, Any]:
    pred, parsed = parse_yes_no(answer)
    return {"id": q.id, "subset": q.subset, "image": q.image, "question": q.text, "label": q.label,
            "prompt": prompt, "answer": answer, "pred": pred, "parsed": parsed}


def evaluate_pope(model, processor, questions: Sequence[PopeQuestion], out_dir: str | os.PathLike, *,
                  prompt: str = DEFAULT_PROMPT, batch_size: int = 8, max_new_tokens: int = 8,
                  problems: list[BadRow] | None = None, settings: dict | None = None, fresh: bool = False,
                  progress: bool = True, gen_kwargs: dict | None = None) -> dict[str, Any]:
    """Answer every question (resuming from ``out_dir/predictions.jsonl``) and write ``metrics.json``."""
    if QUESTION_SLOT not in prompt:
        raise ValueError(f"--prompt must contain {QUESTION_SLOT} where the question goes; got {prompt!r}")
    out = Path(out_dir)
    problems = problems if problems is not None else []
    journal = open_run(out, dict(settings or {}, prompt=prompt, max_new_tokens=max_new_tokens), fresh=fresh,
                       key_fields=("subset", "id"))

    def build(q: PopeQuestion) -> Query:
        return Query(prompt=prompt.replace(QUESTION_SLOT, q.text), images=[load_image(q.image)])

    def row(q: PopeQuestion, query: Query, answer: str) -> dict:
        return pope_row(q, answer, query.prompt)

    done = run_generation(model, processor, questions, build, row, journal, problems, batch_size=batch_size,
                          max_new_tokens=max_new_tokens, length=lambda q: len(q.text), progress=progress,
                          gen_kwargs=gen_kwargs)
    # verdicts are parsed again from the stored answer text
    rows = [pope_row(q, done[q.key]["answer"], done[q.key].get("prompt")) for q in questions if q.key in done]
    metrics = summarise_pope(rows)
    metrics["skipped_rows"] = len(problems)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_skipped(out, problems)
    return metrics
