"""What every stage shares: the run context, stage files, resume bookkeeping and the async driver.

A stage reads its predecessor's JSONL (one record per image), skips the images its own JSONL already
holds, processes the rest and appends one record per image as soon as that image is done.

* A record may note partial losses in ``"problems": {what: why}`` (e.g. one rejected answer).
* A record with an ``"error"`` field is final for that image (for example an unreadable file or an
  answer without a single usable object) and is not passed on.
* An image whose VLM request failed after every retry gets no record at all, so the next run tries it
  again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from data_pipeline.images import Shard, open_image
from data_pipeline.jsonl import JsonlWriter, read_jsonl
from data_pipeline.templates import Templates
from data_pipeline.vlm_client import VLMClient, VLMUnavailable, image_data_url

logger = logging.getLogger(__name__)

STAGES = ("recognise", "ground", "relate", "qa", "filter", "export")
Records = Callable[[], Iterator[dict[str, Any]]]  # returns a fresh iterator over a stage's records
PREVIOUS = {"ground": "recognise", "relate": "ground", "qa": "relate", "filter": "qa"}


@dataclass
class StageReport:
    stage: str
    done_before: int = 0  # images already finished by an earlier run
    written: int = 0  # records written by this run (including error records)
    errors: Counter[str] = field(default_factory=Counter)  # images lost at this stage, by reason
    problems: Counter[str] = field(default_factory=Counter)  # partial losses (e.g. one rejected answer)
    pending: int = 0  # images left without a record (their requests failed); a rerun retries them

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "done_before": self.done_before,
            "written": self.written,
            "errors": dict(self.errors),
            "problems": dict(self.problems),
            "pending": self.pending,
        }


@dataclass
class RunContext:
    """Everything a stage needs. ``vlm`` is None for runs without VLM stages."""

    image_dir: Path
    out_dir: Path
    shard: Shard
    templates: Templates
    vlm: VLMClient | None
    options: dict[str, Any]
    seed: int = 0

    def stage_path(self, stage: str) -> Path:
        return self.out_dir / f"{stage}{self.shard.suffix}.jsonl"

    def inputs(self, stage: str) -> Records:
        """The predecessor's good records (no ``error``) for this shard, streamed in file order."""
        path = self.stage_path(PREVIOUS[stage])
        if not path.exists():
            raise FileNotFoundError(
                f"stage {stage!r} reads {path}, which does not exist: run the "
                f"{PREVIOUS[stage]!r} stage first (--stages {PREVIOUS[stage]},{stage})"
            )
        return lambda: (r for r in read_jsonl(path) if "error" not in r)

    def done_ids(self, stage: str) -> set[str]:
        return {r["image_id"] for r in read_jsonl(self.stage_path(stage))}


@dataclass
class Pending:
    """The records a stage still has to process, streamed (records can be large: never all in memory)."""

    records: Records
    done: set[str]
    count: int

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (r for r in self.records() if r["image_id"] not in self.done)


def split_pending(ctx: RunContext, stage: str, records: Records) -> tuple[Pending, StageReport]:
    done = ctx.done_ids(stage)
    total = todo = 0
    for r in records():
        total += 1
        todo += r["image_id"] not in done
    report = StageReport(stage, done_before=total - todo)
    if report.done_before:
        logger.info("%s: %d/%d images already done by an earlier run", stage, report.done_before, total)
    return Pending(records, done, todo), report


def _tally(report: StageReport, record: dict[str, Any], result: dict[str, Any]) -> None:
    report.written += 1
    if "error" in result:
        report.errors[result["error"].split(":")[0]] += 1
    known = record.get("problems", {})
    report.problems.update(k for k in result.get("problems", {}) if k not in known)


def run_sync_stage(
    ctx: RunContext, stage: str, records: Records, process: Callable[[dict[str, Any]], dict[str, Any]]
) -> StageReport:
    """Apply ``process`` to each pending record, appending each result as soon as it is ready."""
    todo, report = split_pending(ctx, stage, records)
    if not todo.count:
        return report
    with JsonlWriter(ctx.stage_path(stage)) as out:
        for record in tqdm(todo, total=todo.count, desc=stage, unit="img"):
            result = process(record)
            out.write(result)
            _tally(report, record, result)
    return report


async def image_and_url(ctx: RunContext, image_id: str) -> tuple[Image.Image, str]:
    """Open an image and encode it for the VLM in a worker thread (decoding would stall the event loop)."""
    assert ctx.vlm is not None
    max_side = ctx.vlm.settings.max_image_side

    def load() -> tuple[Image.Image, str]:
        image = open_image(ctx.image_dir, image_id)
        return image, image_data_url(image, max_side)

    return await asyncio.to_thread(load)


def run_vlm_stage(
    ctx: RunContext,
    stage: str,
    records: Records,
    process: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> StageReport:
    """Run the coroutine ``process`` on pending records concurrently (the VLM client bounds requests)."""
    todo, report = split_pending(ctx, stage, records)
    if not todo.count:
        return report
    if ctx.vlm is None:
        raise RuntimeError(f"stage {stage!r} needs a VLM client")
    vlm = ctx.vlm

    async def main() -> None:
        pending = iter(todo)
        with JsonlWriter(ctx.stage_path(stage)) as out, tqdm(total=todo.count, desc=stage, unit="img") as bar:

            async def worker() -> None:
                # a fixed pool of workers keeps at most `workers` images (decoded and base64-encoded) in
                # memory however many images the stage has; the VLM client bounds the requests in flight
                for record in pending:
                    try:
                        result = await process(record)
                    except VLMUnavailable as exc:
                        logger.warning("%s", exc)
                        report.pending += 1
                        continue
                    finally:
                        bar.update(1)
                    out.write(result)
                    _tally(report, record, result)

            tasks = [
                asyncio.create_task(worker()) for _ in range(min(todo.count, 2 * vlm.settings.concurrency))
            ]
            try:
                done, running = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                # one worker failed (e.g. a refused API key): stop the others before closing the client,
                # so no request is left retrying against a closed connection
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                await vlm.aclose()

    asyncio.run(main())
    return report
