"""Durable JSONL files, the answer cache and the usage log survive interrupted runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_pipeline.answer_cache import AnswerCache, request_hash
from data_pipeline.jsonl import JsonlWriter, read_jsonl
from data_pipeline.usage import Prices, UsageLog


def test_partial_last_line_is_skipped_then_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stage.jsonl"
    path.write_text('{"image_id": "a"}\n{"image_id": "b", "na')  # killed mid-write
    assert [r["image_id"] for r in read_jsonl(path)] == ["a"]
    with JsonlWriter(path) as out:
        out.write({"image_id": "b"})
    assert path.read_text() == '{"image_id": "a"}\n{"image_id":"b"}\n'


def test_a_bad_line_in_the_middle_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "stage.jsonl"
    path.write_text('{"image_id": "a"}\nnot json\n{"image_id": "c"}\n')
    with pytest.raises(ValueError, match=r"stage\.jsonl, line 2: not valid JSON"):
        list(read_jsonl(path))
    path.write_text('{"image_id": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2: expected a JSON object, got list"):
        list(read_jsonl(path))


def test_answer_cache_reloads_answers_and_keys_on_image_stage_and_hash(tmp_path: Path) -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
    h = request_hash(payload)
    assert h == request_hash(json.loads(json.dumps(payload)))  # key order does not matter
    assert h != request_hash({**payload, "model": "other"})
    cache = AnswerCache(tmp_path / "answers.jsonl")
    cache.put("img.png", "recognise", h, '{"objects": []}', model="m")
    cache.close()
    again = AnswerCache(tmp_path / "answers.jsonl")
    assert again.get("img.png", "recognise", h) == '{"objects": []}'
    assert again.get("img.png", "relate", h) is None and again.get("other.png", "recognise", h) is None
    (tmp_path / "broken.jsonl").write_text('{"image_id": "x", "stage": "s", "answer": "a"}\n')
    with pytest.raises(ValueError, match=r"broken\.jsonl, line 1: missing field 'request_hash'"):
        AnswerCache(tmp_path / "broken.jsonl")


def test_usage_log_costs_and_totals(tmp_path: Path) -> None:
    log = UsageLog(tmp_path / "usage.jsonl", Prices(input_per_mtok=2.5, output_per_mtok=10.0))
    cost = log.record(
        image_id="a",
        stage="recognise",
        req_hash="h",
        model="m",
        prompt_tokens=1000,
        completion_tokens=200,
        latency_s=0.5,
        attempts=2,
    )
    assert cost == pytest.approx(0.0025 + 0.002)
    log.record(
        image_id="b",
        stage="qa.description",
        req_hash="h2",
        model="m",
        prompt_tokens=10,
        completion_tokens=0,
        latency_s=0.1,
        attempts=1,
    )
    log.close()
    rows = [json.loads(x) for x in (tmp_path / "usage.jsonl").read_text().splitlines()]
    assert rows[0]["total_tokens"] == 1200 and rows[0]["attempts"] == 2
    summary = log.summary()
    assert summary["requests"] == 2 and summary["by_stage"]["recognise"]["prompt_tokens"] == 1000
    assert log.all_time().cost_usd == pytest.approx(summary["cost_usd"], abs=1e-6)
    with pytest.raises(ValueError, match="--price-input"):
        Prices(-1.0, 0.0)
