"""``tinygg eval rec`` and ``tinygg eval pope``: registered into the ``eval`` group by :func:`register`.

    tinygg eval rec  --model M --data refer:data/refer --out runs/rec [--splits val testA] [--vis 8]
    tinygg eval rec  --predictions theirs.jsonl --data parquet:'data/RefCOCO/data/*.parquet' --out runs/x
    tinygg eval pope --model M --questions data/pope --images data/coco/val2014 --out runs/pope
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from ..cli import prompt_template
from ..helpformat import HelpFormatter

logger = logging.getLogger(__name__)

T = TypeVar("T")


REC_EPILOG = """\
data specs (--data, repeatable):
  refer:ROOT[:DATASETS]   refer API files: ROOT/refcoco/{refs(unc).p,instances.json}, ROOT/refcoco+/...,
                          ROOT/refcocog/{refs(umd).p,instances.json}; COCO train2014 images under ROOT
                          (images/mscoco/images/train2014, images/train2014, train2014) or --image-root.
                          DATASETS: comma list of refcoco,refcoco+,refcocog (default: all present).
                          Splits: val/testA/testB (RefCOCO, RefCOCO+), val/test (RefCOCOg).
  parquet:GLOB[:DATASET]  lmms-lab/RefCOCO, RefCOCOplus, RefCOCOg parquet files (a glob or a folder); split
                          from the file name (val-00000-of-00004.parquet), dataset from the path or DATASET.
                          Every sentence of 'answer' is one sample.
  jsonl:PATH[:NAME]       Shikra-style JSONL {"img_path", "expression", "bbox": [x1,y1,x2,y2] pixels}
                          (as `tinygg data synth` writes test_rec.jsonl); images relative to the file or
                          --image-root; split NAME, else from Shikra names (REC_refcoco+_unc_testA.jsonl ->
                          refcoco+_testA), else the file stem.
  Without a prefix the kind is guessed from the path.

split names are DATASET_SPLIT (refcoco_val, refcoco+_testA, refcocog_test); --splits accepts full names
or bare ones (val = every dataset's val).

metric: Acc@0.5 -- correct when IoU(predicted box, GT box) >= 0.5 (the first box in the answer, mapped from
the padded square to original pixels); an answer without a box is a miss and counts as a parse failure.
Outputs in --out: metrics.json, predictions.jsonl (one line per sample), run.json, skipped.jsonl (bad rows),
vis/*.png (GT green, prediction red). A killed run resumes when started again with the same --out.
"""


def _limit(items: Sequence[T], n: int | None, group: str) -> list[T]:
    """The first ``n`` items of each group (split or subset), in order."""
    if not n:
        return list(items)
    seen: dict[str, int] = defaultdict(int)
    out = []
    for it in items:
        g = getattr(it, group)
        if seen[g] < n:
            seen[g] += 1
            out.append(it)
    return out


def _model_label(args: argparse.Namespace) -> str:
    if args.model_name:
        return args.model_name
    if args.model:
        return Path(args.model).name or str(args.model)
    return Path(args.predictions).stem


def cmd_rec(args: argparse.Namespace) -> int:
    from .rec import METRIC_NOTE, evaluate_rec, score_existing
    from .report import rec_details, rec_table
    from .sources import load_rec_data

    if args.box_format != "square" and not args.predictions:
        raise ValueError("--box-format is for scoring --predictions of other systems; this model writes "
                         "boxes normalised to the padded square")
    if not args.data and not args.predictions:
        raise ValueError("--data is required with --model (see `tinygg eval rec --help` for the data specs)")
    samples, problems = (load_rec_data(args.data, args.splits, image_root=args.image_root)
                         if args.data else (None, []))
    if samples is not None:
        samples = _limit(samples, args.limit, "split")
        counts = defaultdict(int)
        for s in samples:
            counts[s.split] += 1
        logger.info("REC data: %s (%d rows skipped)", dict(counts), len(problems))
    if args.predictions:
        metrics = score_existing(args.predictions, args.out, samples, problems, vis=args.vis,
                                 box_format=args.box_format)
    else:
        from ..inference import load_model

        model, processor = load_model(args.model)
        metrics = evaluate_rec(model, processor, samples, args.out, prompt=args.prompt,
                               batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, vis=args.vis,
                               problems=problems,
                               settings={"model": str(args.model), "data": list(args.data)}, fresh=args.fresh)
    print(rec_table(metrics, _model_label(args)))
    print()
    print(rec_details(metrics))
    print(METRIC_NOTE)
    if metrics.get("skipped_rows"):
        print(f"{metrics['skipped_rows']} bad rows skipped (listed in {Path(args.out) / 'skipped.jsonl'})")
    print(f"metrics -> {Path(args.out) / 'metrics.json'}")
    return 0


def cmd_pope(args: argparse.Namespace) -> int:
    from ..inference import load_model
    from .pope import evaluate_pope
    from .report import pope_details, pope_table
    from .sources import read_pope

    questions, problems = read_pope(args.questions, args.images)
    questions = _limit(questions, args.limit, "subset")
    model, processor = load_model(args.model)
    metrics = evaluate_pope(model, processor, questions, args.out, prompt=args.prompt,
                            batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, problems=problems,
                            settings={"model": str(args.model), "questions": str(args.questions)},
                            fresh=args.fresh)
    print(pope_table(metrics, _model_label(args)))
    print()
    print(pope_details(metrics))
    print("Accuracy, F1 (positive = yes) and Yes = share of 'yes' answers, in %. " + metrics["note"] + ".")
    print(f"metrics -> {Path(args.out) / 'metrics.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``rec`` and ``pope`` to the ``tinygg eval`` group."""
    from .pope import DEFAULT_PROMPT as POPE_PROMPT
    from .rec import DEFAULT_PROMPT as REC_PROMPT

    p = subparsers.add_parser(
        "rec", formatter_class=HelpFormatter, epilog=REC_EPILOG,
        help="referring expression comprehension: Acc@0.5 on RefCOCO/+/g (the paper's Table 1)",
        description="Evaluate referring expression comprehension: the model answers the prompt with a box "
                    "for each expression; Acc@0.5 per split and their average, printed in the paper's "
                    "Table 1 layout. With --predictions, score answers that already exist (any system) "
                    "instead.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint directory or model-zoo name: generate the answers")
    src.add_argument("--predictions", metavar="FILE",
                     help="score this JSONL of existing answers (an id and the answer text per line) "
                          "instead of running a model; GT from --data, or from the lines themselves (split, "
                          "gt_box, width, height) as predictions.jsonl has them")
    p.add_argument("--data", action="append", metavar="SPEC", help="data spec (see below); repeatable")
    p.add_argument("--splits", nargs="+", metavar="SPLIT",
                   help="only these splits (full or bare names); all eval splits of the data when not given")
    p.add_argument("--out", required=True, help="output folder (resumes a run found there)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    p.add_argument("--limit", type=int, help="only the first N samples of each split (a quick look)")
    p.add_argument("--vis", type=int, default=0, metavar="K",
                   help="draw K overlays (GT green, prediction red)")
    p.add_argument("--prompt", default=REC_PROMPT, metavar="TEMPLATE", type=prompt_template,
                   help="prompt template; <exp> is replaced by the expression, \\n is a newline, and <image> "
                        "places the image (first when absent)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="answer length limit (a box is ~30 tokens)")
    p.add_argument("--box-format", default="square", choices=["square", "image", "pixel", "grid1000"],
                   help="with --predictions: how the other system writes boxes: square = normalised to the "
                        "padded square (this project, GroundingGPT, Shikra); image = normalised to the "
                        "image's width and height; pixel = absolute pixels (Qwen2.5-VL); grid1000 = 0-1000 "
                        "of the image (Qwen-VL)")
    p.add_argument("--image-root", help="folder the image paths of refer/JSONL data are relative to")
    p.add_argument("--model-name", help="row label in the printed table (the model folder name by default)")
    p.add_argument("--fresh", action="store_true", help="discard predictions of an earlier run in --out")
    p.set_defaults(func=cmd_rec)

    p = subparsers.add_parser(
        "pope", formatter_class=HelpFormatter,
        help="POPE object hallucination: accuracy, F1, yes-ratio (the paper's Table 3)",
        description="Evaluate object hallucination on POPE: yes/no questions in the random, popular and "
                    "adversarial subsets; accuracy, precision, recall, F1 (positive = yes) and the yes-ratio "
                    "per subset, printed in the paper's Table 3 layout. Writes metrics.json and "
                    "predictions.jsonl; a killed run resumes when started again with the same --out.")
    p.add_argument("--model", required=True, help="checkpoint directory or model-zoo name")
    p.add_argument("--questions", required=True, metavar="FILE_OR_DIR",
                   help="a POPE question file (JSONL lines {question_id, image, text, label}) or a folder of "
                        "them (coco_pope_random.json, coco_pope_popular.json, coco_pope_adversarial.json)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the images (COCO val2014)")
    p.add_argument("--out", required=True, help="output folder (resumes a run found there)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    p.add_argument("--limit", type=int, help="only the first N questions of each subset")
    p.add_argument("--prompt", default=POPE_PROMPT, metavar="TEMPLATE", type=prompt_template,
                   help="prompt template; <question> is replaced by the question, \\n is a newline")
    p.add_argument("--max-new-tokens", type=int, default=8,
                   help="answer length limit (yes/no needs one or two)")
    p.add_argument("--model-name", help="row label in the printed table (the model folder name by default)")
    p.add_argument("--fresh", action="store_true", help="discard predictions of an earlier run in --out")
    p.set_defaults(func=cmd_pope)
