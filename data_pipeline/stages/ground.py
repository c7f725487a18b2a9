"""Stage 2, ground: box every recognised object with GroundingDINO (the paper's dictionary S1).

Output record: the input plus ``"objects": [{"id": "o1", "name", "box": [x1,y1,x2,y2] pixels, "score"}]``
(ids numbered in order of name, then score), ``"ungrounded": [names without a box]``.
"""

from __future__ import annotations

from typing import Any

from data_pipeline.grounding import GroundingDetector, clean_name
from data_pipeline.images import open_image
from data_pipeline.stage import RunContext, StageReport, run_sync_stage, split_pending

STAGE = "ground"


def run(ctx: RunContext, detector: GroundingDetector | None = None) -> StageReport:
    records = ctx.inputs(STAGE)
    todo, _ = split_pending(ctx, STAGE, records)
    if todo.count and detector is None:  # load the model only when there is work for it
        # one box more than the filter tolerates is enough to tell that a name is ambiguous
        detector = GroundingDetector(
            ctx.options["grounding_model"],
            box_threshold=ctx.options["box_threshold"],
            text_threshold=ctx.options["text_threshold"],
            device=ctx.options["device"],
            max_per_name=ctx.options["filters"].max_instances + 1,
        )

    def process(record: dict[str, Any]) -> dict[str, Any]:
        assert detector is not None
        image = open_image(ctx.image_dir, record["image_id"])
        detections = detector.detect(image, record["names"])
        objects = [
            {"id": f"o{k + 1}", "name": d.name, "box": d.box, "score": d.score}
            for k, d in enumerate(detections)
        ]
        found = {d.name for d in detections}
        out = {
            **record,
            "objects": objects,
            "ungrounded": [n for n in record["names"] if clean_name(n) not in found],
        }
        if not objects:
            out["error"] = "nothing grounded: no box passed the thresholds"
        return out

    return run_sync_stage(ctx, STAGE, records, process)
