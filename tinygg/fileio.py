"""Atomic file writes: a killed run leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a sibling temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data: Any, indent: int | None = 1) -> Path:
    """``data`` as JSON (non-ASCII kept as it is, a final newline) at ``path``, atomically."""
    return write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=indent) + "\n")


def write_jsonl(path: str | Path, records: Any, sort_keys: bool = False) -> Path:
    """One JSON object per line at ``path``, atomically."""
    return write_text_atomic(path, "".join(json.dumps(r, sort_keys=sort_keys) + "\n" for r in records))
