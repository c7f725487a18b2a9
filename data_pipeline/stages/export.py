"""Stage 6, export: write the kept samples as training data in the project's schema.

Writes, in the output directory (``<name><shard suffix>.json`` when sharded):

* ``train.json``: every sample (JSON list), ``image`` relative to the ``--images`` directory, which is
  therefore the image root to train with;
* ``train_fine_grained.json``: the fine-grained families (the paper's stage-2 data);
* ``train_global.json``: conversations and descriptions (the paper's stage-3 data);
* ``export_stats.json``: samples per family, images, and filter drop counts.

Every sample is checked by :func:`data_pipeline.schema.validate_samples` before anything is written.
Without ``--shard`` the filter outputs of all shards found in the output directory are merged.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from data_pipeline.families import FINE_GRAINED, GLOBAL
from data_pipeline.jsonl import read_jsonl
from data_pipeline.schema import validate_samples
from data_pipeline.stage import RunContext, StageReport
from tinygg.fileio import write_json

logger = logging.getLogger(__name__)

STAGE = "export"


def filter_files(ctx: RunContext) -> list[Path]:
    if ctx.shard.count > 1:
        return [ctx.stage_path("filter")]
    return sorted(p for p in ctx.out_dir.glob("filter*.jsonl"))


def training_sample(record: dict[str, Any], k: int, sample: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": f"{record['image_id']}#{sample['family']}#{k}", "image": record["image_id"]}
    if sample["objects"]:
        out["objects"] = [list(b) for b in sample["objects"]]
    out["conversations"] = sample["conversations"]
    return out


def run(ctx: RunContext) -> StageReport:
    files = filter_files(ctx)
    if not files or not any(p.exists() for p in files):
        raise FileNotFoundError(
            f"export reads the filter stage's output in {ctx.out_dir}, which has none: "
            f"run --stages filter first"
        )
    samples: list[dict[str, Any]] = []
    families: list[str] = []
    dropped: Counter[str] = Counter()
    images = 0
    for path in files:
        for record in read_jsonl(path):
            dropped.update(record.get("dropped", {}))
            if "error" in record:
                continue
            images += 1
            for k, sample in enumerate(record["samples"]):
                samples.append(training_sample(record, k, sample))
                families.append(sample["family"])
    suffix = ctx.shard.suffix
    validate_samples(samples, ctx.image_dir, source=f"export to {ctx.out_dir / f'train{suffix}.json'}")
    write_json(ctx.out_dir / f"train{suffix}.json", samples)
    write_json(
        ctx.out_dir / f"train_fine_grained{suffix}.json",
        [s for s, f in zip(samples, families) if f in FINE_GRAINED],
    )
    write_json(
        ctx.out_dir / f"train_global{suffix}.json", [s for s, f in zip(samples, families) if f in GLOBAL]
    )
    stats = {
        "images": images,
        "samples": len(samples),
        "families": dict(Counter(families)),
        "dropped": dict(dropped),
        "image_root": str(ctx.image_dir.resolve()),
    }
    write_json(ctx.out_dir / f"export_stats{suffix}.json", stats)
    logger.info(
        "export: %d samples from %d images -> %s", len(samples), images, ctx.out_dir / f"train{suffix}.json"
    )
    return StageReport(STAGE, written=len(samples))
