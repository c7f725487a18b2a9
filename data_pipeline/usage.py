"""The usage and cost log: one ``usage.jsonl`` line per answered VLM request, plus running totals.

Cost is computed from configurable prices in US dollars per million tokens (input and output apart),
because every provider and model prices differently; with prices 0 the log still counts tokens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipeline.jsonl import JsonlWriter, read_jsonl


@dataclass(frozen=True)
class Prices:
    """US dollars per one million tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def __post_init__(self) -> None:
        if self.input_per_mtok < 0 or self.output_per_mtok < 0:
            raise ValueError(
                f"prices must be >= 0; got input {self.input_per_mtok}, "
                f"output {self.output_per_mtok} (--price-input / --price-output)"
            )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


@dataclass
class UsageTotals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    by_stage: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, stage: str, prompt_tokens: int, completion_tokens: int, cost: float) -> None:
        self.requests += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd += cost
        s = self.by_stage.setdefault(
            stage, {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
        )
        s["requests"] += 1
        s["prompt_tokens"] += prompt_tokens
        s["completion_tokens"] += completion_tokens
        s["cost_usd"] += cost


class UsageLog:
    """Appends to ``usage.jsonl``; ``totals`` covers this run, ``all_time()`` every run in the file."""

    def __init__(self, path: str | Path, prices: Prices):
        self.path = Path(path)
        self.prices = prices
        self.totals = UsageTotals()
        self._writer: JsonlWriter | None = None

    def record(
        self,
        *,
        image_id: str,
        stage: str,
        req_hash: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        latency_s: float,
        attempts: int,
    ) -> float:
        cost = self.prices.cost(prompt_tokens, completion_tokens)
        if self._writer is None:
            self._writer = JsonlWriter(self.path)
        self._writer.write(
            {
                "time": round(time.time(), 3),
                "image_id": image_id,
                "stage": stage,
                "request_hash": req_hash,
                "model": model,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "cost_usd": round(cost, 8),
                "latency_s": round(latency_s, 3),
                "attempts": attempts,
            }
        )
        self.totals.add(stage, prompt_tokens, completion_tokens, cost)
        return cost

    def all_time(self) -> UsageTotals:
        totals = UsageTotals()
        for rec in read_jsonl(self.path):
            totals.add(
                rec.get("stage", "?"),
                int(rec.get("prompt_tokens", 0)),
                int(rec.get("completion_tokens", 0)),
                float(rec.get("cost_usd", 0.0)),
            )
        return totals

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def summary(self) -> dict[str, Any]:
        t = self.totals
        return {
            "requests": t.requests,
            "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens,
            "cost_usd": round(t.cost_usd, 6),
            "by_stage": t.by_stage,
        }
