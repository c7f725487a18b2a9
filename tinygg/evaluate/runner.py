"""Resumable batched greedy generation over evaluation items (REC samples, POPE questions).

Items already in the journal are skipped; the rest are answered ``batch_size`` at a time through
:func:`tinygg.inference.generate` (left padding, KV cache) and each finished batch is appended to the
journal at once, so a killed run loses at most one batch. An item whose image cannot be read is reported
as a :class:`~tinygg.evaluate.sources.BadRow` and skipped.

Items are answered in order of prompt length (less padding per batch); greedy answers do not depend on
the batch they fall in, which the tests check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..inference import Query, generate
from .journal import Journal
from .sources import BadRow

logger = logging.getLogger(__name__)


class Item(Protocol):
    """What the runner needs of an item: a unique key and where it was read (for error messages)."""

    key: tuple[str, str]
    source_file: str
    source_row: int | str
    where: str


def run_generation(model, processor, items: Sequence[Item], build_query: Callable[[Any], Query],
                   make_row: Callable[[Any, Query, str], dict], journal: Journal, problems: list[BadRow], *,
                   batch_size: int = 8, max_new_tokens: int = 32, length: Callable[[Any], int] | None = None,
                   progress: bool = True, gen_kwargs: dict | None = None) -> dict[tuple[str, ...], dict]:
    """Answer every item not yet in ``journal``; returns all journal rows by key (old and new)."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1; got {batch_size}")
    done = journal.load()
    pending = [it for it in items if tuple(it.key) not in done]
    if done:
        logger.info("resuming: %d of %d items already answered in %s", len(items) - len(pending), len(items),
                    journal.path)
    if length is not None:
        pending.sort(key=length)
    bar = tqdm(total=len(pending), desc="evaluate", unit="sample", disable=not progress)
    for start in range(0, len(pending), batch_size):
        chunk = pending[start:start + batch_size]
        ready, queries = [], []
        for it in chunk:
            try:
                queries.append(build_query(it))
                ready.append(it)
            except (FileNotFoundError, ValueError) as e:
                problems.append(BadRow(it.source_file, it.source_row, "image", str(e)))
                logger.warning("skipping %s: %s", it.where, e)
        if queries:
            answers = generate(model, processor, queries, max_new_tokens=max_new_tokens,
                               batch_size=len(queries), **(gen_kwargs or {}))
            rows = [make_row(it, q, a) for it, q, a in zip(ready, queries, answers)]
            journal.append(rows)
            for row in rows:
                done[journal.key(row)] = row
        bar.update(len(chunk))
    bar.close()
    return done

