"""Run the pipeline's stages in order over one image directory (or one shard of it).

    tinygg data pipeline --images photos/ --out synth/ --stages recognise,ground,relate,qa,filter,export

Files in the output directory (names get ``.shard<i>of<n>`` before the extension with ``--shard``):
``recognise.jsonl``, ``ground.jsonl``, ``relate.jsonl``, ``qa.jsonl``, ``filter.jsonl`` (one record per
image each), ``answers.jsonl`` (every VLM answer, the resume cache), ``usage.jsonl`` (tokens and cost per
request), ``train*.json`` and ``export_stats.json`` (export), ``run_summary.json`` (the last run).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipeline.answer_cache import AnswerCache
from data_pipeline.filters import FilterSettings
from data_pipeline.grounding import DEFAULT_GROUNDING_MODEL
from data_pipeline.images import Shard
from data_pipeline.stage import STAGES, RunContext, StageReport
from data_pipeline.stages import export, ground, qa, recognise, relate
from data_pipeline.stages import filter as filter_stage
from data_pipeline.templates import Templates
from data_pipeline.usage import UsageLog
from data_pipeline.vlm_client import VLMClient, VLMSettings

logger = logging.getLogger(__name__)

VLM_STAGES = frozenset({"recognise", "relate", "qa"})
RUNNERS = {
    "recognise": recognise.run,
    "ground": ground.run,
    "relate": relate.run,
    "qa": qa.run,
    "filter": filter_stage.run,
    "export": export.run,
}


@dataclass
class PipelineOptions:
    """Per-stage settings that are not about the VLM connection."""

    grounding_model: str = DEFAULT_GROUNDING_MODEL
    box_threshold: float = 0.35
    text_threshold: float = 0.25
    device: str = "cpu"
    max_objects: int = 20
    max_relations: int = 20
    max_questions: int = 6
    conversation_rounds: int = 4
    filters: FilterSettings = field(default_factory=FilterSettings)
    prompts_dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("box_threshold", "text_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must lie in [0, 1]; got {getattr(self, name)}")
        for name in ("max_objects", "max_relations", "max_questions", "conversation_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")


def parse_stages(text: str | None) -> list[str]:
    """``"ground,qa"`` -> stages in pipeline order; unknown names raise ``ValueError``."""
    if not text:
        return list(STAGES)
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown or not wanted:
        raise ValueError(f"--stages: unknown stage(s) {unknown or text!r}; choose from {','.join(STAGES)}")
    return [s for s in STAGES if s in wanted]


def run_pipeline(
    image_dir: str | Path,
    out_dir: str | Path,
    *,
    stages: list[str] | None = None,
    redo: bool = False,
    shard: Shard | None = None,
    vlm_settings: VLMSettings | None = None,
    options: PipelineOptions | None = None,
    vlm_client: VLMClient | None = None,
) -> dict[str, Any]:
    """Run ``stages`` (default: all) and return the run summary (also written to run_summary.json).

    ``redo`` first discards the selected stages' outputs (never the answer cache or the usage log).
    """
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    stages = list(STAGES) if stages is None else stages
    shard = shard or Shard()
    options = options or PipelineOptions()
    out_dir.mkdir(parents=True, exist_ok=True)
    vlm = vlm_client
    if vlm is None and VLM_STAGES.intersection(stages):
        settings = vlm_settings or VLMSettings.from_env()
        vlm = VLMClient(
            settings,
            AnswerCache(out_dir / f"answers{shard.suffix}.jsonl"),
            UsageLog(out_dir / f"usage{shard.suffix}.jsonl", settings.prices),
        )
    ctx = RunContext(
        image_dir=image_dir,
        out_dir=out_dir,
        shard=shard,
        templates=Templates(options.prompts_dir),
        vlm=vlm,
        seed=options.seed,
        options={
            "grounding_model": options.grounding_model,
            "box_threshold": options.box_threshold,
            "text_threshold": options.text_threshold,
            "device": options.device,
            "max_objects": options.max_objects,
            "max_relations": options.max_relations,
            "max_questions": options.max_questions,
            "conversation_rounds": options.conversation_rounds,
            "filters": options.filters,
        },
    )
    if redo:  # export rewrites its files anyway; answers.jsonl and usage.jsonl are never discarded
        for stage in stages:
            if stage != "export" and ctx.stage_path(stage).exists():
                logger.info("--redo: discarding %s", ctx.stage_path(stage))
                ctx.stage_path(stage).unlink()
    reports: list[StageReport] = []
    try:
        for stage in stages:
            logger.info("stage %s", stage)
            reports.append(RUNNERS[stage](ctx))
    finally:
        if vlm is not None:
            vlm.cache.close()
            vlm.usage.close()
    summary: dict[str, Any] = {
        "stages": [r.as_dict() for r in reports],
        "pending_images": sum(r.pending for r in reports),
    }
    if vlm is not None:
        summary["vlm"] = {
            "base_url": vlm.settings.base_url,
            "model": vlm.settings.model,
            "stats": dict(vlm.stats),
            "usage_this_run": vlm.usage.summary(),
            "cost_all_runs_usd": round(vlm.usage.all_time().cost_usd, 6),
        }
    (out_dir / f"run_summary{shard.suffix}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
