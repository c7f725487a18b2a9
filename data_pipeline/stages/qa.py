"""Stage 4, qa: generate every sample family for an image (see :mod:`data_pipeline.families`).

Three VLM requests per image, sent concurrently: fine-grained grounding (expressions + relation QAs),
a multi-round grounding conversation, and a grounding description; they are cached under the stage names
``qa.fine_grained``, ``qa.conversation`` and ``qa.description``. One unusable answer costs only its own
families (the reason is kept in ``"problems"``); an image that yields no sample at all gets an error.

Output record: the input plus ``"samples": [{"family", "conversations", "objects", "refs"}, ...]``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from data_pipeline import families
from data_pipeline.json_repair import MalformedAnswer
from data_pipeline.markup import objects_listing, relations_listing
from data_pipeline.stage import RunContext, StageReport, image_and_url, run_vlm_stage
from data_pipeline.vlm_client import VLMClient, user_message

STAGE = "qa"


def run(ctx: RunContext) -> StageReport:
    records = ctx.inputs(STAGE)
    assert ctx.vlm is not None
    vlm: VLMClient = ctx.vlm
    opts = ctx.options

    async def ask(record: dict[str, Any], image_url: str, kind: str, **values: Any) -> Any:
        prompt = ctx.templates.prompt(
            f"qa_{kind}.txt", objects=objects_listing(record), relations=relations_listing(record), **values
        )
        messages = [
            {"role": "system", "content": ctx.templates.text("system.txt")},
            user_message(prompt, image_url),
        ]
        return (await vlm.ask_json(record["image_id"], f"{STAGE}.{kind}", messages)).value

    async def process(record: dict[str, Any]) -> dict[str, Any]:
        _, url = await image_and_url(ctx, record["image_id"])

        async def kept_if_malformed(kind: str, **values: Any) -> Any:
            try:
                return await ask(record, url, kind, **values)
            except MalformedAnswer as exc:  # costs only this answer's families
                return exc

        tasks = [
            asyncio.create_task(kept_if_malformed("fine_grained", max_questions=opts["max_questions"])),
            asyncio.create_task(kept_if_malformed("conversation", rounds=opts["conversation_rounds"])),
            asyncio.create_task(kept_if_malformed("description")),
        ]
        try:
            answers = await asyncio.gather(*tasks)
        except BaseException:
            # anything else (VLMUnavailable, a refused key, cancellation) leaves the image pending: stop
            # the sibling requests instead of waiting for their retries
            for task in tasks:
                task.cancel()
            raise
        fine, conversation, description = answers
        samples: list[dict[str, Any]] = []
        errors: dict[str, str] = {}
        dropped = 0
        if isinstance(fine, MalformedAnswer):
            errors["fine_grained"] = str(fine)
            fine = None  # the object families need no words from the model where names are unique
        samples += families.object_families(
            record, families.parse_expressions(fine, record), ctx.templates, ctx.seed
        )
        try:
            qa_samples, dropped = families.relation_qa_family(fine, record)
            samples += qa_samples
        except MalformedAnswer as exc:
            errors["fine_grained"] = str(exc)
        for kind, value, build in (
            ("conversation", conversation, lambda v: families.conversation_family(v, record)),
            (
                "description",
                description,
                lambda v: families.description_family(v, record, ctx.templates, ctx.seed),
            ),
        ):
            try:
                if isinstance(value, MalformedAnswer):
                    raise value
                samples += build(value)
            except MalformedAnswer as exc:
                errors[kind] = str(exc)
        out = {**record, "samples": samples, "qa_dropped": dropped}
        if errors:
            out["problems"] = {**record.get("problems", {}), **{f"qa.{k}": v for k, v in errors.items()}}
        if not samples:
            out["error"] = f"no samples: {errors or 'every item was unusable'}"
        return out

    return run_vlm_stage(ctx, STAGE, records, process)
