"""``tinygg data convert``: your grounding data -> training samples."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_jsonl, convert_refer
    from .schema import write_samples

    rejects: list[dict] | None = [] if args.skip_invalid else None
    if args.format == "jsonl":
        if not args.input:
            raise ValueError("--format jsonl needs --input FILE.jsonl")
        samples = convert_jsonl(args.input, args.image_root, args.box_format, args.seed, args.with_reg, rejects)
    else:
        if not (args.refs and args.instances):
            raise ValueError("--format refer needs --refs 'refs(unc).p' and --instances instances.json")
        samples = convert_refer(args.refs, args.instances, args.splits.split(","), args.seed, args.with_reg,
                                args.image_prefix, rejects)
    out = write_samples(samples, args.out)
    print(f"{len(samples)} samples -> {out}")
    if rejects:
        rej = Path(args.rejects or str(out) + ".rejects.jsonl")
        with rej.open("w") as f:
            for r in rejects:
                f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        print(f"{len(rejects)} invalid rows skipped -> {rej}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="convert RefCOCO refer files or a simple JSONL into REC training samples",
        description="Convert grounding data into training samples (expression -> box, varied prompts).\n\n"
                    "  tinygg data convert --format jsonl --input mine.jsonl --image-root imgs --out train.json\n"
                    "  tinygg data convert --format refer --refs 'refcoco/refs(unc).p' \\\n"
                    "      --instances refcoco/instances.json --splits train --out refcoco_train.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", choices=["jsonl", "refer"], required=True)
    p.add_argument("--input", help="jsonl: rows {image, expression, bbox} (pixels)")
    p.add_argument("--image-root", help="jsonl: folder the image paths are relative to (default: the file's)")
    p.add_argument("--box-format", choices=["xyxy", "xywh"], default="xyxy", help="jsonl: how bbox is written")
    p.add_argument("--refs", help="refer: refs(unc).p / refs(umd).p pickle")
    p.add_argument("--instances", help="refer: COCO instances.json")
    p.add_argument("--splits", default="train", help="refer: comma-separated splits to convert")
    p.add_argument("--image-prefix", default="", help="refer: prefix for COCO file names (e.g. train2014/)")
    p.add_argument("--with-reg", action="store_true", help="also add box -> expression samples")
    p.add_argument("--seed", type=int, default=0, help="seed of the prompt template choice")
    p.add_argument("--out", required=True, help="output .json (list) or .jsonl")
    p.add_argument("--skip-invalid", action="store_true", help="skip bad rows (written to --rejects) instead "
                                                               "of stopping at the first")
    p.add_argument("--rejects", help="where skipped rows go (default: OUT.rejects.jsonl)")
    p.set_defaults(func=cmd_convert)
