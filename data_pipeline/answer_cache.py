"""Persisted VLM answers, keyed by (image id, stage, request hash): what makes a killed run resumable.

Every answer is appended to ``answers.jsonl`` the moment it arrives (before anything else is done with
it), so a restarted run finds it and does not pay for the same request twice. The request hash covers
the model, every message (prompt text and image bytes) and the sampling parameters: change the prompt
or the model and the request is new.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from data_pipeline.jsonl import JsonlWriter, read_jsonl


def request_hash(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a chat-completion request body (hex, 24 chars)."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


class AnswerCache:
    """In-memory view of ``answers.jsonl`` plus a durable writer for new answers."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # only the answer text is kept in memory (the file holds model, finish reason and time too)
        self._answers: dict[tuple[str, str, str], str] = {}
        for row, record in enumerate(read_jsonl(self.path), start=1):
            try:
                self._answers[(record["image_id"], record["stage"], record["request_hash"])] = record[
                    "answer"
                ]
            except KeyError as exc:
                raise ValueError(f"{self.path}, line {row}: missing field {exc}") from None
        self._writer: JsonlWriter | None = None

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, image_id: str, stage: str, req_hash: str) -> str | None:
        """The answer text, or None when this request was never answered."""
        return self._answers.get((image_id, stage, req_hash))

    def put(self, image_id: str, stage: str, req_hash: str, answer: str, **extra: Any) -> None:
        record = {
            "image_id": image_id,
            "stage": stage,
            "request_hash": req_hash,
            "answer": answer,
            "time": round(time.time(), 3),
            **extra,
        }
        if self._writer is None:
            self._writer = JsonlWriter(self.path)
        self._writer.write(record)
        self._answers[(image_id, stage, req_hash)] = answer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
