"""``tinygg dig train``: the DiG GRPO stage(s) from a YAML plus ``key=value`` overrides.

``register(subparsers)`` adds ``train`` to the ``tinygg dig`` group. ``python -m dig.grpo_cli`` is the same
command for launchers (``deepspeed --module dig.grpo_cli``, which ``bash scripts/dig.sh`` runs)::

    tinygg dig train --config scripts/configs/dig.yaml init=checkpoints/tinygg-stage3 max_steps=100
    bash scripts/dig.sh pairs_root=runs/dig/pairs        # 2 CPU processes or every GPU, ZeRO-2
"""

from __future__ import annotations

import argparse
import logging
import sys

EPILOG = """\
The YAML sets dig.grpo.GRPOStageConfig fields (init, pairs, num_generations, temperature, learning_rate, beta,
epsilon, epsilon_high, loss_type, max_completion_length, max_steps, w_format, w_f1, w_iou, box_format, ...) and
optionally a curriculum: `stages:` (name, pairs, per-stage fields), `mode: fixed|adaptive`, `pairs_root`.
Overrides: `max_steps=20` applies to every stage, `stages.dual.max_steps=50` to one.

Outputs per stage <output_dir>/<k>_<name>/: checkpoint-*/ (resume), final/ (the exported checkpoint, loadable
with the Auto classes), log_history.jsonl, rewards.png; and <output_dir>/curriculum.json,
curriculum_rewards.png. Run the same command again to resume: finished stages are skipped.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="YAML", help="stage or curriculum YAML (scripts/configs/dig*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="override fields: init=CKPT, pairs_root=DIR, max_steps=20, stages.mixed.max_steps=40, "
                        "mode=adaptive")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)


def cmd_train(args: argparse.Namespace) -> int:
    from dig.curriculum import load_curriculum, run_curriculum

    final = run_curriculum(load_curriculum(args.config, args.overrides))
    print(f"done: {final}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` to the ``tinygg dig`` group."""
    p = subparsers.add_parser(
        "train", help="GRPO post-training on DiG pairs (curriculum single -> dual -> mixed)",
        description="GRPO post-training (TRL GRPOTrainer) of a TinyGroundingGPT checkpoint or any HF "
                    "image-text-to-text model on DiG image pairs, with the DiG reward (format + Hungarian F1 + "
                    "IoU) and a curriculum of stages. For several GPUs or the 2-process CPU run use the "
                    "launcher: bash scripts/dig.sh [KEY=VALUE ...].",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dig.grpo_cli`` (what the deepspeed launcher runs)."""
    parser = argparse.ArgumentParser(prog="python -m dig.grpo_cli", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    return cmd_train(args)


if __name__ == "__main__":
    sys.exit(main())
