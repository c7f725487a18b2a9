"""The resumable record of an evaluation: ``predictions.jsonl`` (one finished sample per line, appended and
flushed batch by batch) and ``run.json`` (the settings the answers depend on).

A run killed at any point resumes by skipping the samples whose line is complete; a half-written last
line is cut off. Resuming with other settings (model, prompt, generation length) would mix answers of two
runs in one table, so it is refused unless the user asks for a fresh start.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .sources import BadRow

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
MANIFEST = "run.json"
SKIPPED = "skipped.jsonl"


class Journal:
    """Append-only JSONL of finished predictions, keyed by the values of ``key_fields``."""

    def __init__(self, path: str | os.PathLike, key_fields: Sequence[str] = ("split", "id")) -> None:
        self.path = Path(path)
        self.key_fields = tuple(key_fields)

    def key(self, row: dict) -> tuple[str, ...]:
        return tuple(str(row[k]) for k in self.key_fields)

    def load(self) -> dict[tuple[str, ...], dict]:
        """Every complete row by key (a later row for the same key wins); cuts a torn last line."""
        rows: dict[tuple[str, ...], dict] = {}
        if not self.path.exists():
            return rows
        data = self.path.read_bytes()
        good_end = 0
        pos = 0
        for n, line in enumerate(data.splitlines(keepends=True), 1):
            pos += len(line)
            complete = line.endswith(b"\n")
            try:
                row = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                if not complete:  # killed mid-write: drop the fragment
                    break
                raise ValueError(f"{self.path}, line {n}: not valid JSON; this file is the run's record of "
                                 "finished predictions: fix or remove the line, or start afresh with "
                                 "--fresh") from None
            if not complete:
                break
            good_end = pos
            if row is None:
                continue
            try:
                rows[self.key(row)] = row
            except KeyError as e:
                raise ValueError(f"{self.path}, line {n}: field {e.args[0]!r} is missing (each line needs "
                                 f"{list(self.key_fields)})") from None
        if good_end < len(data):
            logger.warning("%s: dropping a half-written last line (%d bytes) from an interrupted run",
                           self.path, len(data) - good_end)
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        return rows

    def append(self, rows: Iterable[dict]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def _same_files(value: Any) -> Any:
    """``value`` with every ``:``-separated part that names an existing file or folder replaced by its absolute
    path, so that ``runs/x`` and ``/home/me/runs/x`` (or ``jsonl:runs/x.jsonl:val``) compare equal."""
    if isinstance(value, list):
        return [_same_files(v) for v in value]
    if not isinstance(value, str):
        return value
    return ":".join(str(Path(part).resolve()) if part and Path(part).exists() else part for part in value.split(":"))


def open_run(out_dir: str | os.PathLike, settings: dict[str, Any], fresh: bool = False,
             key_fields: Sequence[str] = ("split", "id")) -> Journal:
    """The journal of ``out_dir``, checked against the run's ``settings`` (written to ``run.json``).

    Raises ``ValueError`` when earlier predictions there were made with other settings (unless ``fresh``,
    which deletes them); a file or folder spelled another way (relative / absolute) is the same setting.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    journal = Journal(out / PREDICTIONS, key_fields)
    manifest = out / MANIFEST
    if fresh and journal.path.exists():
        logger.info("--fresh: removing %s", journal.path)
        journal.path.unlink()
    if journal.path.exists() and journal.path.stat().st_size and manifest.exists():
        before = json.loads(manifest.read_text())
        changed = {k: (before.get(k), v) for k, v in settings.items()
                   if _same_files(before.get(k)) != _same_files(v)}
        if changed:
            detail = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(f"{out} holds predictions of a run with other settings ({detail}); resume "
                             "with the same settings, choose another --out, or pass --fresh to discard them")
    manifest.write_text(json.dumps(settings, indent=2) + "\n")
    return journal


def write_skipped(out_dir: str | os.PathLike, problems: Sequence[BadRow], shown: int = 20) -> None:
    """Log the rows that were skipped (the first ``shown``) and list them all in ``skipped.jsonl``."""
    path = Path(out_dir) / SKIPPED
    if not problems:
        path.unlink(missing_ok=True)
        return
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(p.to_json()) + "\n" for p in problems)
    for p in problems[:shown]:
        logger.warning("skipped: %s", p)
    if len(problems) > shown:
        logger.warning("... and %d more skipped rows (all in %s)", len(problems) - shown, path)
