"""``tinygg eval dig``: score answers to DiG pairs (F1, precision, recall, mean IoU by difficulty and change
kind) and draw overlays. ``register_eval(subparsers)`` adds it to the ``tinygg eval`` group::

    tinygg eval dig --pairs data/dig/test --predictions preds.jsonl --out runs/dig-eval --vis 16

``--model`` (generate the answers with a checkpoint, then score them) goes through :func:`generate_fn`
(:mod:`dig.predict`: the GRPO prompt, batched greedy generation)::

    tinygg eval dig --pairs data/dig/test --model runs/dig/3_mixed/final --out runs/dig-eval
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dig.rewards import BOX_FORMATS, IOU_MODES, RewardConfig
from tinygg.helpformat import HelpFormatter

logger = logging.getLogger(__name__)


EPILOG = """\
predictions: a JSONL file, one {"id": <pair id>, "answer": <model text>} per line ("text", "prediction" or
"output" also work for the text). Box frames: norm = TinyGroundingGPT's [x1,y1,x2,y2] in 0..1 of the image
padded to a square; qwen1000 = Qwen-VL's 0..1000 grid relative to the image; pixel = image pixels.

writes: OUT/metrics.json (overall, by_difficulty, by_kind), OUT/per_sample.jsonl, OUT/vis/<id>.png
(image A | image B; GT green with its change kind, predictions blue when a hit, red otherwise).
"""


def generate_fn(model: str, records: Sequence[Mapping[str, Any]], args: argparse.Namespace) -> list[str]:
    """Answer every pair with ``model`` (one text per record, in order), asking for ``args.box_format`` boxes."""
    from dig.predict import generate_fn as answer

    return answer(model, records, args)


def register_eval(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``dig`` to the ``tinygg eval`` group."""
    p = subparsers.add_parser(
        "dig", formatter_class=HelpFormatter, epilog=EPILOG,
        help="DiG differences: F1, precision, recall, mean IoU by difficulty and change kind",
        description="Score answers to DiG image pairs with the DiG reward's own matching (one-to-one "
                    "Hungarian, hit at IoU >= tau): detection precision, recall and F1, mean IoU of the "
                    "matches, by difficulty and by change kind, plus overlays.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--predictions", metavar="JSONL", help="answers to score (see below)")
    src.add_argument("--model", metavar="M", help="checkpoint directory or zoo name: generate the answers first")
    p.add_argument("--pairs", required=True, metavar="DIR",
                   help="pairs folder (every pairs*.jsonl in it) or one pairs JSONL file")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--vis", type=int, default=8, metavar="K", help="draw overlays of the first K pairs (0: none)")
    p.add_argument("--box-format", default="norm", choices=list(BOX_FORMATS), help="frame of the boxes in answers")
    p.add_argument("--tau", type=float, default=0.5, metavar="T", help="IoU at or above which a matched box is a hit")
    p.add_argument("--max-boxes", type=int, default=10, metavar="N", help="boxes per answer that are matched (more: a format "
                                                             "failure, and all count as predictions)")
    p.add_argument("--iou-mode", default="matched", choices=list(IOU_MODES),
                   help="per-pair mean IoU over the matched pairs, over the GT boxes, or over max(N, M)")
    p.add_argument("--batch-size", type=int, default=8, help="--model: pairs per generation batch")
    p.add_argument("--max-new-tokens", type=int, default=128, help="--model: answer length limit in tokens")
    p.add_argument("--allow-missing", action="store_true",
                   help="score pairs without a prediction as empty answers instead of stopping")
    p.set_defaults(func=cmd_eval_dig)
    return p


def cmd_eval_dig(args: argparse.Namespace) -> int:
    from dig.evaluate import (
        align_predictions,
        format_table,
        read_predictions,
        score_predictions,
        write_report,
    )
    from dig.pairs import read_pairs

    cfg = RewardConfig(box_format=args.box_format, tau=args.tau, max_boxes=args.max_boxes, iou_mode=args.iou_mode)
    records = read_pairs(args.pairs)
    if args.model:
        texts, missing = generate_fn(args.model, records, args), []
    else:
        texts, missing = align_predictions(records, read_predictions(args.predictions), args.allow_missing)
    result = score_predictions(records, texts, cfg)
    result["missing_predictions"] = missing
    result["pairs"] = str(Path(args.pairs))
    path = write_report(result, records, args.out, vis=args.vis)
    print(format_table(result))
    if missing:
        print(f"\n{len(missing)} pairs had no prediction and were scored as empty answers")
    print(f"\nmetrics -> {path}")
    logger.debug("%s", json.dumps(result["overall"]))
    return 0
