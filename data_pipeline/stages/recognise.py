"""Stage 1, recognise: ask the VLM for the list of objects visible in each image (the paper's L1).

Output record: ``{"image_id", "width", "height", "names": [str, ...]}`` (or ``"error"``).
"""

from __future__ import annotations

from typing import Any

from data_pipeline.images import list_images
from data_pipeline.json_repair import MalformedAnswer
from data_pipeline.stage import RunContext, StageReport, image_and_url, run_vlm_stage
from data_pipeline.vlm_client import user_message

STAGE = "recognise"


def _names(value: Any, max_objects: int) -> list[str]:
    items = value.get("objects") if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise MalformedAnswer(f'expected {{"objects": [...]}}, got {type(value).__name__}')
    names: list[str] = []
    for item in items:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name.strip():
            names.append(" ".join(name.strip().lower().split()))
    return list(dict.fromkeys(names))[:max_objects]


def run(ctx: RunContext) -> StageReport:
    ids = ctx.shard.take(list_images(ctx.image_dir))
    records = lambda: ({"image_id": i} for i in ids)
    max_objects = int(ctx.options["max_objects"])
    assert ctx.vlm is not None
    vlm = ctx.vlm

    async def process(record: dict[str, Any]) -> dict[str, Any]:
        try:
            image, url = await image_and_url(ctx, record["image_id"])
        except ValueError as exc:  # a corrupt file costs its own record, not the run
            return {"image_id": record["image_id"], "error": f"unreadable image: {exc}"}
        out = {"image_id": record["image_id"], "width": image.width, "height": image.height}
        messages = [
            {"role": "system", "content": ctx.templates.text("system.txt")},
            user_message(ctx.templates.prompt("recognise.txt", max_objects=max_objects), url),
        ]
        try:
            names = _names((await vlm.ask_json(record["image_id"], STAGE, messages)).value, max_objects)
        except MalformedAnswer as exc:
            return {**out, "error": f"malformed answer: {exc}"}
        if not names:
            return {**out, "error": "no objects: the model listed none"}
        return {**out, "names": names}

    return run_vlm_stage(ctx, STAGE, records, process)
