"""The DiG curriculum: GRPO stages run in order (single -> dual -> mixed), each starting from the checkpoint the
previous one exported.

A curriculum YAML holds the shared :class:`~dig.grpo.GRPOStageConfig` fields at the top level, plus::

    output_dir: runs/dig                 # stage k writes <output_dir>/<k>_<name>/ (final/ is its checkpoint)
    pairs_root: runs/dig/pairs           # a stage's relative `pairs` is read under it
    mode: fixed                          # fixed: each stage runs its max_steps / epochs
                                         # adaptive: a stage also ends when the mean reward over the last
                                         #   stop_window logged steps reaches its stop_reward (a stage
                                         #   without stop_reward runs its whole budget)
    stages:
      - {name: single, pairs: single, stop_reward: 2.0}
      - {name: dual, pairs: dual, stop_reward: 1.8}
      - {name: mixed, pairs: mixed}

Precedence, lowest first: top-level YAML fields, the stage's YAML entry, ``key=value`` overrides (apply to
every stage), ``stages.<name>.key=value`` overrides (one stage). The first stage starts from ``init``.

Restarts: a stage whose ``final/dig_stage.json`` exists is skipped; a killed stage resumes from its last
checkpoint. ``<output_dir>/curriculum.json`` lists the stages and their results; ``curriculum_rewards.png``
plots the reward curves of all stages on one step axis (each stage also writes its own ``rewards.png``).

    bash scripts/dig.sh                                   # scripts/configs/dig.yaml under DeepSpeed
    tinygg dig train --config scripts/configs/dig.yaml init=ckpt max_steps=20
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dig.grpo import (
    REWARD_KEYS,
    ZERO_STD_KEY,
    GRPOStageConfig,
    build_dataclass,
    parse_overrides,
    rank,
    read_yaml,
    run_stage,
    stage_done,
)

logger = logging.getLogger(__name__)

MODES = ("fixed", "adaptive")
CURVE_LABELS = {"reward": "total", "rewards/dig_format/mean": "format", "rewards/dig_f1/mean": "F1",
                "rewards/dig_iou/mean": "IoU"}


@dataclass
class Stage:
    name: str
    config: GRPOStageConfig


@dataclass
class Curriculum:
    output_dir: Path
    mode: str
    stages: list[Stage]


def load_curriculum(path: str | Path | None, overrides: Sequence[str] = ()) -> Curriculum:
    """The stages of a curriculum YAML (see the module docstring). A YAML without ``stages:`` is one stage,
    written to ``output_dir`` itself."""
    where = str(path or "overrides")
    values = read_yaml(path) if path else {}
    cli = parse_overrides(overrides)
    per_stage = cli.pop("stages", {}) or {}
    mode = cli.pop("mode", values.pop("mode", "fixed"))
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be one of {MODES}; got {mode!r}")
    pairs_root = cli.pop("pairs_root", values.pop("pairs_root", None))
    single = not values.get("stages")  # a plain stage YAML: one stage written to output_dir itself
    entries = values.pop("stages", None) or [{"name": "grpo"}]
    if not isinstance(entries, list):
        raise ValueError(f"{where}: stages must be a list of {{name, pairs, ...}}; got {entries!r}")
    output_dir = Path(cli.pop("output_dir", values.pop("output_dir", "runs/dig")))
    init = cli.pop("init", values.pop("init", "preset:tiny"))
    names = [e.get("name") if isinstance(e, dict) else None for e in entries]
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n:
            raise ValueError(f"{where}: stages[{i}] needs a name; got {entries[i]!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: stage names repeat: {names}")
    unknown = set(per_stage) - set(names)
    if unknown:
        raise ValueError(f"overrides: stages.{min(unknown)}: no such stage (stages: {names})")

    stages = []
    for k, entry in enumerate(entries):
        fields = {key: v for key, v in {**values, **entry, **cli, **per_stage.get(entry["name"], {})}.items()
                  if key != "name"}
        fields["output_dir"] = str(output_dir if single else output_dir / f"{k + 1}_{entry['name']}")
        pairs = fields.get("pairs", "")
        if pairs_root and pairs and not Path(pairs).is_absolute():
            fields["pairs"] = str(Path(pairs_root) / pairs)
        if mode == "fixed":
            fields["stop_reward"] = None  # adaptive: a stage without stop_reward runs its whole budget
        cfg = build_dataclass(GRPOStageConfig, fields, f"{where}: stage {entry['name']!r}")
        stages.append(Stage(entry["name"], cfg))
    stages[0].config = replace(stages[0].config, init=init)
    return Curriculum(output_dir, mode, stages)


def run_curriculum(cur: Curriculum, processor: Any = None) -> Path:
    """Run the stages in order, each from the previous stage's ``final``; returns the last ``final``."""
    cur.output_dir.mkdir(parents=True, exist_ok=True)
    init = cur.stages[0].config.init
    results = []
    final = Path(init)
    for k, stage in enumerate(cur.stages):
        cfg = stage.config if k == 0 else replace(stage.config, init=str(final))
        done = stage_done(cfg.output_dir) if cfg.resume else None
        skipped = done is not None
        if skipped and rank() == 0:
            logger.info("curriculum: stage %d/%d %s already finished (%d steps); skipped", k + 1,
                        len(cur.stages), stage.name, done["steps"])
            final = Path(cfg.output_dir) / "final"
        else:
            if rank() == 0:
                logger.info("curriculum: stage %d/%d %s from %s", k + 1, len(cur.stages), stage.name, cfg.init)
            final = run_stage(cfg, name=stage.name, processor=processor)
            done = stage_done(cfg.output_dir) or {}
        results.append({"name": stage.name, "output_dir": cfg.output_dir, "final": str(final), "skipped": skipped,
                         **{key: done.get(key) for key in ("init", "steps", "stopped_early",
                                                           "mean_reward_last_window")}})
        if rank() == 0:
            write_summary(cur, results)
    return final


def write_summary(cur: Curriculum, results: list[dict[str, Any]]) -> None:
    """``curriculum.json`` and ``curriculum_rewards.png`` (all stages' curves on one step axis)."""
    (cur.output_dir / "curriculum.json").write_text(json.dumps({"mode": cur.mode, "stages": results}, indent=2)
                                                     + "\n")
    curves = []
    for r in results:
        log = Path(r["output_dir"]) / "log_history.jsonl"
        if log.exists():
            curves.append((r["name"], [json.loads(x) for x in log.read_text().splitlines() if x.strip()]))
    if curves:
        plot_reward_curves(curves, cur.output_dir / "curriculum_rewards.png")


def plot_reward_curves(stages: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path) -> Path:
    """Reward (total, format, F1, IoU) and the fraction of zero-variance groups against the step, stages laid
    end to end with their names at the boundaries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_z) = plt.subplots(2, 1, figsize=(8, 5), dpi=110, sharex=True,
                                     gridspec_kw={"height_ratios": [3, 1.3]})
    offset = 0
    for s, (name, history) in enumerate(stages):
        rows = [h for h in history if "reward" in h]
        steps = [offset + h["step"] for h in rows]
        for key, colour in zip(REWARD_KEYS, ("k", "tab:blue", "tab:orange", "tab:green")):
            ys = [h.get(key, float("nan")) for h in rows]
            ax_r.plot(steps, ys, color=colour, lw=1.4 if key == "reward" else 1.0,
                      label=CURVE_LABELS[key] if s == 0 else None)
        ax_z.plot(steps, [h.get(ZERO_STD_KEY, float("nan")) for h in rows], color="tab:red", lw=1.0)
        if len(stages) > 1:
            for ax in (ax_r, ax_z):
                ax.axvline(offset, color="gray", ls=":", lw=0.8)
            ax_r.text(offset, 1.0, f" {name}", transform=ax_r.get_xaxis_transform(), va="top", fontsize=8)
        offset += max([h["step"] for h in history if "step" in h], default=0)
    ax_r.set_ylabel("reward (mean)")
    ax_r.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax_r.grid(alpha=0.3)
    ax_r.set_title(stages[0][0] if len(stages) == 1 else "DiG curriculum")
    ax_z.set_ylabel("zero-variance\ngroups")
    ax_z.set_ylim(-0.05, 1.05)
    ax_z.set_xlabel("step")
    ax_z.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
