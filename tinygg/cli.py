"""The ``tinygg`` command line.

    tinygg build    --preset tiny --out runs/tiny-stage0
    tinygg predict  --model runs/tiny-stage0 --image photo.jpg --prompt "Output the coordinate of the cat."
    tinygg train    --config scripts/configs/stage2.yaml preset=tiny max_steps=20
    tinygg eval     rec | pope | dig ...
    tinygg data     convert | synth | pipeline ...
    tinygg dig      generate | train ...
    tinygg zoo      list | info | download | verify | add | card | publish
    tinygg demo     [--quick] [--from-scratch]

Heavy imports happen inside the handlers, so ``tinygg --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from .helpformat import HelpFormatter

logger = logging.getLogger("tinygg")


def _parse_box(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected x1,y1,x2,y2 (pixels); got {text!r}") from None
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"expected 4 numbers x1,y1,x2,y2 (pixels); got {len(vals)} in {text!r}")
    return vals


def prompt_template(text: str) -> str:
    """Every ``--prompt`` as typed in a shell: ``\\n`` (backslash, n) stands for a newline, as in the shipped
    prompts' ``<image>\\n...`` and the question-first ``...<exp>\\n<image>``."""
    return text.replace("\\n", "\n")


# --------------------------------------------------------------------------------------------- build
def cmd_build(args: argparse.Namespace) -> int:
    import torch

    from .build import build_model, save_checkpoint

    model, processor = build_model(args.preset, clip=args.clip, dino=args.dino, llm=args.llm, seed=args.seed,
                                   dtype=getattr(torch, args.dtype), embed_std=args.embed_std,
                                   image_token_merge=args.image_token_merge)
    out = save_checkpoint(model, processor, args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"built {args.preset} TinyGroundingGPT ({n / 1e6:.1f}M parameters; {model.config.num_image_tokens} "
          f"tokens per <image>, {model.config.object_tokens} per <object>) -> {out}")
    return 0


# --------------------------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    from .boxes import parse_boxes, square_to_pixel
    from .draw import draw_boxes
    from .inference import Query, generate, load_model
    from .processor import load_image

    image = load_image(args.image)
    model, processor = load_model(args.model)
    prompt = args.prompt
    if args.object and "<object>" not in prompt:
        prompt = prompt + " " + " ".join(["<object>"] * len(args.object))
    query = Query(prompt=prompt, images=[image], objects=args.object or [])
    if args.attention:
        from .attention import answer_with_attention

        answer = answer_with_attention(model, processor, query, out_png=args.attention,
                                       max_new_tokens=args.max_new_tokens)
        print(f"attention map -> {args.attention}", file=sys.stderr)
    else:
        answer = generate(model, processor, [query], max_new_tokens=args.max_new_tokens)[0]
    print(answer)
    boxes = parse_boxes(answer)
    if args.out:
        pixel = square_to_pixel(boxes, image.width, image.height) if len(boxes) else []
        drawn = draw_boxes(image, pixel, labels=[f"{i}" for i in range(len(boxes))])
        if args.object:
            drawn = draw_boxes(drawn, args.object, labels=["<object>"] * len(args.object), color=(40, 120, 230))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        drawn.save(args.out)
        print(f"{len(boxes)} box(es) drawn -> {args.out}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------------------------- parser
# Sub-commands that live in other modules register themselves into a group: (group, module, function).
_EXTERNAL = [
    (None, "tinygg.train", "register"),
    ("eval", "tinygg.evaluate.cli", "register"),
    ("eval", "dig.cli_eval", "register_eval"),
    ("data", "tinygg.data.cli", "register"),
    ("data", "dig.cli", "register_synth"),
    ("data", "data_pipeline.cli", "register"),
    ("dig", "dig.cli", "register_dig"),
    ("dig", "dig.grpo_cli", "register"),
    ("zoo", "model_zoo.cli", "register"),
    (None, "tinygg.demo", "register"),
]
_GROUPS = {
    "eval": "evaluate a model: REC (RefCOCO/+/g), POPE, DiG differences",
    "data": "make training data: convert your grounding data, synthesise, run the synthesis pipeline",
    "dig": "DiG: render image pairs with controlled differences, GRPO post-training",
    "zoo": "the model zoo: list, download, verify, add, write cards, publish checkpoints",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinygg", formatter_class=HelpFormatter,
        description="TinyGroundingGPT: train, fine-tune, post-train (DiG) and evaluate compact grounding "
                    "multimodal LLMs.",
        epilog="Run `tinygg COMMAND --help` for the options of a command.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("build", formatter_class=HelpFormatter,
                       help="assemble a stage-0 checkpoint from components",
                       description="Assemble a stage-0 checkpoint: pretrained CLIP ViT-L/14-336, DINOv2-L and "
                                   "Qwen2.5 (hub ids or local directories) plus a fresh projector; `tiny` builds a "
                                   "random CPU-sized model with a locally built tokenizer (no download).")
    p.add_argument("--preset", required=True, help="tiny | 1.5b | 3b | 7b")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    p.add_argument("--clip", help="CLIP hub id or directory (default for real presets: "
                                  "openai/clip-vit-large-patch14-336)")
    p.add_argument("--dino", help="DINOv2 hub id or directory (default: facebook/dinov2-large)")
    p.add_argument("--llm", help="Qwen2.5 hub id or directory (default: Qwen/Qwen2.5-<size>-Instruct)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random parts")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--embed-std", type=float, metavar="S",
                   help="draw a random LLM's token embeddings at std S instead of 0.02 (tiny preset without "
                        "--llm; docs/demo_recipe.md section 14)")
    p.add_argument("--image-token-merge", type=int, default=1, metavar="K",
                   help="one LLM token per K x K block of patches (their features concatenated before the "
                        "projector): K*K times fewer tokens per <image>")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("predict", formatter_class=HelpFormatter, help="answer one prompt about one image",
                       description="Answer a prompt about an image; every box in the answer is drawn with --out.")
    p.add_argument("--model", required=True, help="checkpoint directory or model-zoo name")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--prompt", required=True, type=prompt_template,
                   help='e.g. "Output the coordinate of the red cube."; \\n is a newline, and <image> places the '
                        'image (first when absent)')
    p.add_argument("--object", type=_parse_box, action="append", metavar="X1,Y1,X2,Y2",
                   help="object box in pixels, cropped as an <object> input (repeatable, in prompt order)")
    p.add_argument("--out", help="PNG with the parsed boxes drawn on the image")
    p.add_argument("--attention", metavar="PNG", help="heat map of the box tokens' last-layer attention "
                                                      "over the image patches")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.set_defaults(func=cmd_predict)

    groups = {}
    for name, help_text in _GROUPS.items():
        g = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        groups[name] = g.add_subparsers(dest=f"{name}_command", metavar="COMMAND")
        g.set_defaults(func=lambda a, g=g: (g.print_help(), 2)[1])
    for group, module, fn in _EXTERNAL:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and (e.name == module or module.startswith(e.name + ".")):
                continue  # that part of the project is not built yet (see README: status)
            raise
        getattr(mod, fn)(groups[group] if group else sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, OSError, RuntimeError) as e:
        # user-facing failures (bad input, missing files, downloads, publishing): one clear line, no traceback
        if args.verbose:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"tinygg: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
