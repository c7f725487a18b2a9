"""Stage 3, relate: ask the VLM for relation triples (object1, relation, object2) among grounded objects.

Output record: the input plus ``"relations": [["o1", "holding", "o2"], ...]`` (ids of grounded objects;
triples naming unknown ids or an object related to itself are dropped and counted in
``"relations_dropped"``). An unrecoverable answer leaves ``relations`` empty and says why in
``"problems": {"relate": reason}``: relations only enrich the QA prompts, so the image goes on.
"""

from __future__ import annotations

from typing import Any

from data_pipeline.json_repair import MalformedAnswer
from data_pipeline.markup import objects_listing
from data_pipeline.stage import RunContext, StageReport, image_and_url, run_vlm_stage
from data_pipeline.vlm_client import user_message

STAGE = "relate"


def parse_relations(value: Any, known: set[str]) -> tuple[list[list[str]], int]:
    """Valid triples from the answer and the number dropped. Accepts lists or dicts per triple."""
    items = value.get("relations") if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise MalformedAnswer(f'expected {{"relations": [...]}}, got {type(value).__name__}')
    triples, dropped = [], 0
    for item in items:
        if isinstance(item, dict):
            item = [
                item.get("subject") or item.get("object1"),
                item.get("relation"),
                item.get("object") or item.get("object2"),
            ]
        if (
            isinstance(item, (list, tuple))
            and len(item) == 3
            and all(isinstance(x, str) for x in item)
            and item[0].strip() in known
            and item[2].strip() in known
            and item[0].strip() != item[2].strip()
            and item[1].strip()
        ):
            triples.append([item[0].strip(), " ".join(item[1].split()), item[2].strip()])
        else:
            dropped += 1
    unique = list({tuple(t): t for t in triples}.values())
    return unique, dropped + len(triples) - len(unique)


def run(ctx: RunContext) -> StageReport:
    records = ctx.inputs(STAGE)
    assert ctx.vlm is not None
    vlm = ctx.vlm

    async def process(record: dict[str, Any]) -> dict[str, Any]:
        if len(record["objects"]) < 2:
            return {**record, "relations": [], "relations_dropped": 0}  # nothing to relate: no request
        _, url = await image_and_url(ctx, record["image_id"])
        prompt = ctx.templates.prompt(
            "relate.txt", objects=objects_listing(record), max_relations=ctx.options["max_relations"]
        )
        messages = [
            {"role": "system", "content": ctx.templates.text("system.txt")},
            user_message(prompt, url),
        ]
        try:
            answer = await vlm.ask_json(record["image_id"], STAGE, messages)
            relations, dropped = parse_relations(answer.value, {o["id"] for o in record["objects"]})
        except MalformedAnswer as exc:
            # relations only enrich the QA prompts: go on without them, but keep the reason
            return {**record, "relations": [], "relations_dropped": 0, "problems": {"relate": str(exc)}}
        return {**record, "relations": relations, "relations_dropped": dropped}

    return run_vlm_stage(ctx, STAGE, records, process)
