"""Supervised training: stages 1-3 of TinyGroundingGPT and fine-tuning on your own grounding data."""

from __future__ import annotations

import argparse

from .config import Freeze, Lora, TrainConfig, load_config

__all__ = ["Freeze", "Lora", "TrainConfig", "load_config", "main", "register"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="stage YAML (scripts/configs/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="override fields: max_steps=20, freeze.llm=lora, preset=tiny, data=FILE[,FILE]")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import run

    cfg = load_config(args.config, args.overrides)
    final = run(cfg)
    print(f"done: {final}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a stage or fine-tune (HF Trainer + DeepSpeed)",
        description="Train one stage from a YAML config plus KEY=VALUE overrides. For several GPUs or the "
                    "2-process CPU run use the launchers: bash scripts/stage2.sh [KEY=VALUE ...].",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_train)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tinygg.train`` (what the deepspeed launcher runs)."""
    import logging

    parser = argparse.ArgumentParser(prog="python -m tinygg.train")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return cmd_train(args)
