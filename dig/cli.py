"""Command-line front ends of DiG data generation; the lead's ``tinygg/cli.py`` wires them in:

* ``register_dig(subparsers)`` adds ``generate`` to the ``tinygg dig`` group::

      tinygg dig generate --out data/dig --difficulty curriculum --renderer blender --workers 2

* ``register_synth(subparsers)`` adds ``synth`` to the ``tinygg data`` group::

      tinygg data synth --out data/synth --n 2000 --size 128x96
"""

from __future__ import annotations

import argparse
import logging

from dig import properties as P

logger = logging.getLogger(__name__)


def parse_size(text: str) -> tuple[int, int]:
    """``"320x240"`` -> (320, 240)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return w, h


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8): this machine makes the pairs whose index % 8 == 2."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n such as 0/4, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def _add_zoom(p: argparse.ArgumentParser) -> None:
    p.add_argument("--zoom", type=float, default=1.0, metavar="Z",
                   help="camera zoom: Z times the lens, positions within 1/Z of CLEVR's range, so objects look "
                        "Z times larger (default: 1, CLEVR's framing)")


def register_dig(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "generate", help="render DiG image pairs with K differences (pairs.jsonl + images)",
        description="Render CLEVR-style image pairs that differ in K objects (shape, colour, size, material, "
                    "added, deleted), with tight ground-truth boxes from instance masks. Resumable: run the "
                    "same command again to finish an interrupted run.")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (pairs.jsonl, images/)")
    p.add_argument("--n", type=int, default=None, metavar="N",
                   help="number of pairs (per set for curriculum; default 1600 for curriculum, else 100)")
    p.add_argument("--difficulty", default="single", choices=["single", "dual", "mixed", "curriculum"],
                   help="single = 1 difference, dual = 2, mixed = 1..4; curriculum writes all three sets "
                        "into single/, dual/, mixed/ (default: single)")
    p.add_argument("--renderer", default="flat", choices=["flat", "blender"],
                   help="flat = fast numpy ray caster; blender = Cycles (needs bpy==5.0.1) (default: flat)")
    p.add_argument("--workers", type=int, default=1, metavar="W", help="parallel render processes (default: 1)")
    p.add_argument("--size", type=parse_size, default=None, metavar="WxH",
                   help=f"image size WxH (default: {P.DEMO_SIZE[0]}x{P.DEMO_SIZE[1]} flat, "
                        f"{P.CLEVR_SIZE[0]}x{P.CLEVR_SIZE[1]} blender)")
    p.add_argument("--samples", type=int, default=32, metavar="S", help="Cycles samples per pixel (blender; default: 32)")
    p.add_argument("--no-denoise", action="store_true",
                   help="skip OpenImageDenoise (blender; noisier images, bit-identical reruns)")
    p.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                   help="i/n: make only the pairs whose index %% n == i (for many machines; default 0/1)")
    p.add_argument("--zero-diff-fraction", type=float, default=0.0, metavar="F",
                   help="share of pairs with no difference, whose answer is [] (default: 0)")
    p.add_argument("--max-differences", type=int, default=4, metavar="K", help="mixed: at most this many (default: 4)")
    p.add_argument("--min-objects", type=int, default=P.MIN_OBJECTS, metavar="K",
                   help=f"objects in scene A, at least (default: {P.MIN_OBJECTS})")
    p.add_argument("--max-objects", type=int, default=P.MAX_OBJECTS, metavar="K",
                   help=f"objects in either scene, at most (default: {P.MAX_OBJECTS})")
    _add_zoom(p)
    p.add_argument("--save-masks", action="store_true", help="also write instance masks to masks/")
    p.add_argument("--sft", action="store_true",
                   help="also write sft.json beside pairs.jsonl: the DiG question answered with the true boxes, "
                        "training data of `tinygg train` for a supervised warm start before GRPO")
    p.add_argument("--seed", type=int, default=0, metavar="SEED", help="random seed; the data depend only on it (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_generate)
    return p


def _run_generate(args: argparse.Namespace) -> int:
    from dig.pairs import CURRICULUM_PAIRS, PairConfig, generate_pairs, pairs_to_samples

    n = args.n if args.n is not None else (CURRICULUM_PAIRS if args.difficulty == "curriculum" else 100)
    cfg = PairConfig(out=args.out, n=n, difficulty=args.difficulty, renderer=args.renderer, workers=args.workers,
                     size=args.size, samples=args.samples, shard=args.shard,
                     zero_diff_fraction=args.zero_diff_fraction, seed=args.seed,
                     max_differences=args.max_differences, save_masks=args.save_masks, denoise=not args.no_denoise,
                     min_objects=args.min_objects, max_objects=args.max_objects, zoom=args.zoom)
    for path in generate_pairs(cfg, progress=not args.no_progress):
        print(path)
        if args.sft:
            print(pairs_to_samples(path, path.parent / "sft.json"))
    return 0


def register_synth(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from dig.synth import TASKS

    p = subparsers.add_parser(
        "synth", help="synthetic grounding corpus from CLEVR scenes (train/val JSON, REC test JSONL)",
        description="Render CLEVR scenes with the flat renderer and write grounding samples in the training "
                    "schema: text->box, box->text, object image->box and text->object image choice, with "
                    "referring expressions unique in their scene. Writes train.json, val.json, test.json, "
                    "test_rec.jsonl and images/ under --out (the image root).")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (the image root of the samples)")
    p.add_argument("--n", type=int, default=1000, metavar="N", help="number of scenes (images) (default: 1000)")
    p.add_argument("--size", type=parse_size, default=P.DEMO_SIZE, metavar="WxH",
                   help=f"image size WxH (default: {P.DEMO_SIZE[0]}x{P.DEMO_SIZE[1]})")
    p.add_argument("--min-objects", type=int, default=P.MIN_OBJECTS, metavar="K",
                   help=f"objects per scene, at least (default: {P.MIN_OBJECTS})")
    p.add_argument("--max-objects", type=int, default=P.MAX_OBJECTS, metavar="K",
                   help=f"objects per scene, at most (default: {P.MAX_OBJECTS}; 1 with --min-objects 1 gives easy "
                        "single-object data)")
    _add_zoom(p)
    p.add_argument("--tasks", default=",".join(TASKS), metavar="LIST",
                   help=f"comma-separated tasks among {','.join(TASKS)} (default: all)")
    p.add_argument("--per-image", type=int, default=2, metavar="K", help="samples per task per image (default: 2)")
    p.add_argument("--turns", type=int, default=1, metavar="K",
                   help="questions per conversation: K > 1 asks several questions about one image in one "
                        "multi-turn sample (fewer tokens per answer; default: 1)")
    p.add_argument("--no-relations", action="store_true",
                   help="attribute expressions only (no 'left of the blue sphere')")
    p.add_argument("--question-first", action="store_true",
                   help="put the question before <image> in every sample (its image tokens then see the question; "
                        "with --turns K only the first question of a conversation comes before the image); evaluate "
                        "such a model with the same layout, e.g. --prompt $'Output the coordinate of <exp>\\n<image>'")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F", help="share of scenes for val (default: 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1, metavar="F", help="share of scenes for test (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, metavar="SEED", help="random seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_synth)
    return p


def _run_synth(args: argparse.Namespace) -> int:
    from dig.synth import SynthConfig, generate_synth

    cfg = SynthConfig(out=args.out, n=args.n, size=args.size, min_objects=args.min_objects,
                      max_objects=args.max_objects, zoom=args.zoom,
                      tasks=tuple(t for t in args.tasks.split(",") if t),
                      per_image=args.per_image, turns=args.turns, relations=not args.no_relations,
                      question_first=args.question_first,
                      val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed)
    counts = generate_synth(cfg, progress=not args.no_progress)
    for name, count in counts.items():
        print(f"{name}: {count}")
    return 0
