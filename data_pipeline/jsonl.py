"""Append-only JSONL files that survive a killed process: the storage of every pipeline stage.

Each line is one JSON object, written in one ``write`` call, flushed and fsynced, so a crash leaves at
most one partial last line. Reading skips (and the next append first removes) such a partial line, so
a restarted stage simply continues after the last complete record.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

logger = logging.getLogger(__name__)


def read_jsonl(path: str | Path, *, strict: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the records of ``path`` one line at a time (none when the file does not exist).

    A partial last line (no trailing newline: a run killed mid-write) is skipped with a warning, unless
    ``strict``. A bad line elsewhere raises ``ValueError`` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):  # only the last line can lack its newline
                if strict:
                    raise ValueError(f"{path}, line {number}: incomplete last line (interrupted write)")
                logger.warning(
                    "%s: ignoring the partial last line %d left by an interrupted run; the next "
                    "append replaces it",
                    path,
                    number,
                )
                return
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{path}, line {number}: not valid JSON ({exc})") from None
            if not isinstance(record, dict):
                got = type(record).__name__
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {got}")
            yield record


class JsonlWriter:
    """Appends records to a JSONL file, one durable line at a time."""

    def __init__(self, path: str | Path, *, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_tail()
        self._fh = self.path.open("a", encoding="utf-8")
        self._fsync = fsync

    def _drop_partial_tail(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb+") as fh:
            data = fh.read()
            if data.endswith(b"\n"):
                return
            cut = data.rfind(b"\n") + 1
            fh.truncate(cut)
        logger.warning(
            "%s: removed a partial last line (%d bytes) left by an interrupted run",
            self.path,
            len(data) - cut,
        )

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        self._fh.write(line)
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
