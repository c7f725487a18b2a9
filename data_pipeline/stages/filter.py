"""Stage 5, filter: drop the samples :func:`data_pipeline.filters.drop_reason` rejects.

No model is called, so it is cheap to rerun with other settings: ``--stages filter,export --redo``.
Output record: the input with the kept ``"samples"`` and
``"dropped": {reason: count}``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from data_pipeline.filters import FilterSettings, drop_reason
from data_pipeline.stage import RunContext, StageReport, run_sync_stage

STAGE = "filter"


def run(ctx: RunContext) -> StageReport:
    settings: FilterSettings = ctx.options["filters"]

    def process(record: dict[str, Any]) -> dict[str, Any]:
        kept, dropped = [], Counter()
        for sample in record["samples"]:
            reason = drop_reason(sample, record, settings)
            if reason is None:
                kept.append(sample)
            else:
                dropped[reason] += 1
        out = {**record, "samples": kept, "dropped": dict(dropped)}
        if not kept:
            out["error"] = f"all samples filtered out: {dict(dropped)}"
        return out

    return run_sync_stage(ctx, STAGE, ctx.inputs(STAGE), process)
