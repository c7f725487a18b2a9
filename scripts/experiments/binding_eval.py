"""Where a checkpoint's REC boxes land in multi-object scenes, and how well it answers text-only ``list2box``.

REC rows come from a synthetic corpus (``tinygg data synth``): each answer is put on the named object
(IoU >= 0.5), on *another* visible object of the scene (the model found an object but not the one asked for:
the binding failure of docs/demo_recipe.md sections 10-12), or on neither. Rows are counted per number of
visible objects and per attributes named (size, colour, material, shape), beside the pick-a-random-object
baseline (1 / objects). With ``--lists`` the corpus's ``list2box`` samples of the same split are asked too: the
box copied from the listing, scored the same way.

    python scripts/experiments/binding_eval.py --model runs/x/final --corpus runs/corpus --limit 300 --lists
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from tinygg.boxes import box_iou, parse_boxes, square_to_pixel
from tinygg.cli import prompt_template
from tinygg.evaluate.rec import DEFAULT_PROMPT, make_prompt


def landing(pred: np.ndarray, target: int, boxes: list) -> str:
    """``target``, ``other`` or ``neither``: the object (of ``boxes``) that ``pred`` overlaps with IoU >= 0.5."""
    if pred is None or len(pred) == 0:
        return "neither"
    ious = box_iou(np.asarray(pred[:1], dtype=float), np.asarray(boxes, dtype=float))[0]
    if ious[target] >= 0.5:
        return "target"
    return "other" if (ious >= 0.5).any() else "neither"


def at_answer_gap(processor, gap: int) -> str:
    """Make ``processor`` build generation prompts as the answer-gap curriculum trains them at ``gap``
    (``TrainConfig.answer_gap_start``; the prompt must end with ``<image>``): only the first ``gap`` template tokens
    after the user turn, or, when negative, none and the answer's first ``-gap`` tokens left out. Returns the
    text those left-out tokens are (prepended to each answer before it is parsed)."""
    tok = processor.tokenizer
    sep = processor.answer_separator()
    kept = tok.decode(sep[:max(gap, 0)])
    cut = tok("[0.", add_special_tokens=False)["input_ids"]
    prefix = tok.decode(cut[:max(-gap, 0)])
    chat = processor.format_chat

    def shortened(turns, add_generation_prompt: bool = False) -> str:
        return chat(turns).removesuffix("<|im_end|>\n") + kept

    processor.format_chat = shortened
    return prefix


def rec_rows(model, processor, corpus: Path, split: str, limit: int, batch_size: int,
             prompt: str = DEFAULT_PROMPT, answer_prefix: str = "") -> list[dict]:
    """Each REC row asked (``prompt`` with the expression; ``<image>`` goes first unless the prompt places it):
    its expression, the number of visible objects, and where the answer (after ``answer_prefix``) landed."""
    from tinygg.demo import scene_boxes
    from tinygg.inference import Query, generate

    scenes = scene_boxes(corpus, split)
    rows = [json.loads(line) for line in (corpus / f"{split}_rec.jsonl").read_text().splitlines() if line.strip()]
    rows = rows[:limit]
    paths = [str((corpus / r["img_path"]).resolve()) for r in rows]
    images = {p: Image.open(p).convert("RGB") for p in set(paths)}
    queries = [Query(make_prompt(prompt, r["expression"]), [images[p]]) for r, p in zip(rows, paths)]
    answers = generate(model, processor, queries, max_new_tokens=32, batch_size=batch_size, progress=True)
    out = []
    for r, path, a in zip(rows, paths, answers):
        boxes = scenes[path]
        target = int(box_iou(np.asarray([r["bbox"]], dtype=float), np.asarray(boxes, dtype=float))[0].argmax())
        a = answer_prefix + a
        pred = square_to_pixel(parse_boxes(a), *images[path].size)
        out.append({"expression": r["expression"], "objects": len(boxes), "answer": a,
                    "landing": landing(pred, target, boxes)})
    return out


def words_asked(expression: str) -> str:
    """Which attributes an expression names, e.g. ``size+color`` for "the small red object"."""
    from dig.scene import ATTRIBUTE_VALUES  # each attribute's values
    from dig.synth import WORD_ORDER  # the order expressions name them in

    words = expression.split()
    named = [k for k in WORD_ORDER if any(w in ATTRIBUTE_VALUES[k] for w in words)]
    return "+".join(named) or "object"


def list_rows(model, processor, corpus: Path, split: str, limit: int, batch_size: int) -> list[str]:
    from tinygg.inference import Query, generate

    samples = [s for s in json.loads((corpus / f"{split}.json").read_text()) if "_list2box_" in s["id"]][:limit]
    if not samples:
        raise SystemExit(f"{corpus / f'{split}.json'}: no list2box samples (ids containing '_list2box_')")
    prompts = [s["conversations"][0]["value"] for s in samples]
    answers = generate(model, processor, [Query(p) for p in prompts], max_new_tokens=32, batch_size=batch_size,
                       progress=True)
    out = []
    for s, prompt, answer in zip(samples, prompts, answers):
        listed = re.findall(r"\[[^\]]*\]", prompt.split("\n")[0])
        boxes = [parse_boxes(b)[0] for b in listed]
        out.append(landing(parse_boxes(answer), listed.index(s["conversations"][1]["value"]), boxes))
    return out


def summary(landings: list[str]) -> str:
    n = len(landings)
    return " ".join(f"{k} {landings.count(k) / n:.1%}" for k in ("target", "other", "neither")) + f" (n={n})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory or zoo name")
    ap.add_argument("--corpus", required=True, type=Path, help="a `tinygg data synth` output folder")
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--limit", type=int, default=300, help="rows asked (each of REC and list2box)")
    ap.add_argument("--lists", action="store_true", help="also ask the split's list2box samples")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", type=Path, help="write the counts here as JSON")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT, type=prompt_template,
                    help="REC prompt with <exp>; the image goes first unless it holds <image> (e.g. "
                         "'Output the coordinate of <exp>\\n<image>' for a model trained question-first)")
    ap.add_argument("--answer-gap", type=int, default=None, metavar="G",
                    help="ask as the answer-gap curriculum trains at gap G (a checkpoint saved mid-curriculum; "
                         "the prompt must end with <image>)")
    args = ap.parse_args()
    if args.answer_gap is not None and not args.prompt.endswith("<image>"):
        ap.error("--answer-gap needs a question-first --prompt ending with <image>")

    import torch

    from tinygg.inference import load_model

    torch.set_num_threads(1)
    model, processor = load_model(args.model, dtype=torch.float32, device="cpu")
    result: dict = {"model": args.model, "corpus": str(args.corpus)}
    prefix = at_answer_gap(processor, args.answer_gap) if args.answer_gap is not None else ""
    rows = rec_rows(model, processor, args.corpus, args.split, args.limit, args.batch_size, args.prompt, prefix)
    result["rec"] = rows
    random_object = np.mean([1 / r["objects"] for r in rows])
    print(f"{args.model}: REC {summary([r['landing'] for r in rows])}; random object {random_object:.1%}")
    for key in (lambda r: f"{r['objects']} objects", lambda r: words_asked(r["expression"])):
        groups: dict[str, list[str]] = defaultdict(list)
        for r in rows:
            groups[key(r)].append(r["landing"])
        for k in sorted(groups):
            print(f"  {k}: {summary(groups[k])}")
    if args.lists:
        result["list2box"] = list_rows(model, processor, args.corpus, args.split, args.limit, args.batch_size)
        print(f"  list2box: {summary(result['list2box'])}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
