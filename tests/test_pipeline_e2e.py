"""End-to-end tests of the data synthesis pipeline against a scripted OpenAI-compatible server.

The real ``openai`` client talks to an ``http.server`` on loopback implementing
``POST /v1/chat/completions``. The server answers each pipeline prompt with scripted JSON built from what
the prompt says (object ids and names), injects a 429 with ``Retry-After``, a 500, a hang longer than the
client's timeout, a repairable and an unrecoverable answer, and counts answered requests per unique
prompt. Photos come from scikit-image; grounding uses a tiny random GroundingDINO saved to disk.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from PIL import Image

from data_pipeline.answer_cache import AnswerCache
from data_pipeline.cli import main as cli_main
from data_pipeline.families import FAMILIES
from data_pipeline.schema import validate_samples
from data_pipeline.tiny_grounding import build_tiny_grounding_dino

KEY = "sk-test-" + hashlib.sha256(b"tinygg-pipeline-test").hexdigest()[:32]
REPO = Path(__file__).resolve().parents[1]
NAMES_BY_SIZE = {  # (width, height) of the photo the VLM "sees" -> objects it recognises
    (512, 512): ["astronaut", "flag", "white helmet"],
    (600, 400): ["cup", "saucer", "spoon"],
    (451, 300): ["cat", "ear", "eye"],
}
OBJECT_LINE = re.compile(r"^(o\d+): (.*?) \[", re.MULTILINE)


# ------------------------------------------------------------------------------------ scripted VLM


def _stage_of(text: str) -> str:
    for marker, stage in (
        ("Task: object recognition", "recognise"),
        ("Task: relation extraction", "relate"),
        ("Task: fine-grained grounding data", "fine_grained"),
        ("Task: multi-round grounding conversation", "conversation"),
        ("Task: grounding description", "description"),
    ):
        if marker in text:
            return stage
    raise AssertionError(f"unexpected prompt: {text[:200]}")


def _answer(stage: str, text: str, image: Image.Image) -> str:
    objects = OBJECT_LINE.findall(text)
    ids = [i for i, _ in objects]
    names = dict(objects)
    if stage == "recognise":
        return json.dumps({"objects": NAMES_BY_SIZE[image.size]})
    if stage == "relate":
        rels = [[a, "next to", b] for a, b in itertools.pairwise(ids)][:4] + [[ids[0], "holding", "o999"]]
        return json.dumps({"relations": rels})
    if stage == "fine_grained":
        return json.dumps(
            {
                "expressions": {i: f"the {names[i]} number {k}" for k, i in enumerate(ids)},
                "qas": [
                    {"question": f"What is next to {{{ids[0]}}}?", "answer": f"{{{ids[1]}}} is next to it."},
                    {"question": f"Is {{{ids[1]}}} near {{{ids[2]}}}?", "answer": "Yes, they touch."},
                    {"question": "A question without any mark?", "answer": "dropped"},
                    {"question": "What about {o999}?", "answer": "dropped too"},
                ],
            }
        )
    if stage == "conversation":
        return json.dumps(
            {
                "conversation": [
                    {
                        "question": f"Where is the {names[ids[0]]}?",
                        "answer": f"The {names[ids[0]]} {{{ids[0]}}} is here.",
                    },
                    {"question": "What is next to it?", "answer": f"The {names[ids[1]]} {{{ids[1]}}}."},
                ]
            }
        )
    if stage == "description":
        return json.dumps(
            {
                "description": f"A photo with a {names[ids[0]]} {{{ids[0]}}} beside a "
                f"{names[ids[1]]} {{{ids[1]}}}."
            }
        )
    raise AssertionError(stage)


class ScriptedVLM:
    """Loopback OpenAI-compatible server. ``faults[(stage, n)]`` lists what the n-th distinct prompt of a
    stage gets on its first attempts: an int status (429/500), "hang", "fenced" (a repairable answer)
    "garbage" (an unrecoverable one) or "bad_qas" (a fine-grained answer whose "qas" is unusable)."""

    def __init__(
        self,
        faults: dict[tuple[str, int], list[Any]] | None = None,
        hang_s: float = 4.0,
        client_timeout_s: float | None = None,
    ):
        self.faults = faults or {}
        self.hang_s = hang_s
        # a hung request stops counting as in flight shortly before the client's timeout: from then on
        # the client has abandoned it (and may already reuse its slot) while this thread still sleeps
        self.hang_counted_s = hang_s if client_timeout_s is None else max(0.0, client_timeout_s - 0.5)
        self.lock = threading.Lock()
        self.answered: Counter[str] = Counter()  # prompt hash -> 200 answers sent
        self.attempts: Counter[str] = Counter()  # prompt hash -> requests received
        self.order: dict[str, list[str]] = {}  # stage -> prompt hashes in order of first arrival
        self.statuses: Counter[int | str] = Counter()
        self.block_after: int | None = None  # stop answering after this many 200s (kill test)
        self.granted = 0  # 200 answers decided so far
        self.in_flight = 0
        self.max_in_flight = 0  # most chat requests handled at the same time
        self.release = threading.Event()
        self.auth_failures = 0
        self.response_formats: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    server.auth_failures += 1
                    return self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
                server.handle(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, handler: Any, body: dict[str, Any]) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        handler.counted = True
        try:
            self._handle(handler, body)
        finally:
            self._uncount(handler)

    def _uncount(self, handler: Any) -> None:
        with self.lock:
            if handler.counted:
                handler.counted = False
                self.in_flight -= 1

    def _handle(self, handler: Any, body: dict[str, Any]) -> None:
        user = body["messages"][-1]["content"]
        text = "".join(part["text"] for part in user if part["type"] == "text")
        url = next(part["image_url"]["url"] for part in user if part["type"] == "image_url")
        assert url.startswith("data:image/jpeg;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        stage = _stage_of(text)
        self.response_formats[json.dumps(body.get("response_format"))] += 1
        key = hashlib.sha256(json.dumps(body["messages"], sort_keys=True).encode()).hexdigest()
        with self.lock:
            seen = self.order.setdefault(stage, [])
            if key not in seen:
                seen.append(key)
            attempt = self.attempts[key]
            self.attempts[key] += 1
            plan = self.faults.get((stage, seen.index(key)), [])
            action = plan[attempt] if attempt < len(plan) else "ok"
            # answers are granted at arrival, under the lock, so concurrent requests cannot overshoot
            answers = action in ("ok", "fenced", "garbage")
            blocked = answers and self.block_after is not None and self.granted >= self.block_after
            self.granted += answers and not blocked
        if blocked:
            self.release.wait(30)
            return handler._send(503, {"error": {"message": "shutting down"}})
        self.statuses[action] += 1
        if action == 429:
            return handler._send(
                429,
                {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}},
                {"Retry-After": "0.05"},
            )
        if action == 500:
            return handler._send(500, {"error": {"message": "internal error", "type": "server_error"}})
        if action == "hang":
            time.sleep(self.hang_counted_s)
            self._uncount(handler)
            time.sleep(self.hang_s - self.hang_counted_s)
            return handler._send(500, {"error": {"message": "too late"}})
        answer = _answer(stage, text, image)
        if action == "fenced":
            answer = "Here you go:\n```json\n" + answer[:-1] + ",}\n```"
        elif action == "garbage":
            answer = "I am sorry, I cannot describe this image {{{"
        elif action == "bad_qas":  # valid JSON, expressions fine, but "qas" is not a list
            answer = json.dumps({**json.loads(answer), "qas": "none"})
        with self.lock:
            self.answered[key] += 1
        handler._send(
            200,
            {
                "id": f"chatcmpl-{key[:8]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": len(text) // 4 + 85,
                    "completion_tokens": len(answer) // 4,
                    "total_tokens": len(text) // 4 + 85 + len(answer) // 4,
                },
            },
        )


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(data, name)()).save(root / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def tiny_gdino(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = [w for names in NAMES_BY_SIZE.values() for n in names for w in n.split()]
    return build_tiny_grounding_dino(tmp_path_factory.mktemp("gdino") / "tiny", words=words)


def _vlm_argv(images: Path, out: Path, base_url: str, options: str = "") -> list[str]:
    """``pipeline`` arguments for a run against the scripted server; ``options`` is split on spaces."""
    return ["pipeline", "--images", str(images), "--out", str(out), "--base-url", base_url, *options.split()]


# thresholds low enough for a random GroundingDINO to ground something; fast retries; prices for the log.
# The timeout is generous: a request the server answered but the client gave up on (an overloaded CI
# machine) would be paid twice, which is real behaviour but not what these tests are about.
_FULL_RUN = (
    "--model test-vlm --box-threshold 0.05 --text-threshold 0.0 --max-instances 30 --min-score 0.05 "
    "--min-object-area 0.0005 --max-object-area 0.95 --max-option-iou 0.9 --timeout 30 --backoff 0.05 "
    "--price-input 2.5 --price-output 10"
)


def _argv(photos: Path, out: Path, gdino: Path, base_url: str, *extra: str) -> list[str]:
    return [*_vlm_argv(photos, out, base_url, _FULL_RUN), "--grounding-model", str(gdino), *extra]


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _files_text(out: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------- tests


def test_end_to_end_every_family_faults_and_rerun(
    photos: Path,
    tiny_gdino: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level("DEBUG")
    faults = {
        ("recognise", 0): [429, 500],
        ("recognise", 1): ["fenced"],
        ("relate", 0): ["hang"],
        ("description", 0): ["garbage"],
        ("fine_grained", 0): ["bad_qas"],
        ("fine_grained", 1): ["garbage"],
        ("fine_grained", 2): [429],
    }
    out = tmp_path / "out"
    with ScriptedVLM(faults, hang_s=4.0, client_timeout_s=3.0) as vlm:  # the hang outlasts a 3 s timeout
        assert (
            cli_main(_argv(photos, out, tiny_gdino, vlm.base_url, "--concurrency", "3", "--timeout", "3"))
            == 0
        )
        summary = json.loads(capsys.readouterr().out)
        first_answers = sum(vlm.answered.values())
        # every prompt answered exactly once; 3 images x (recognise, relate, 3 qa) prompts
        assert sorted(vlm.answered.values()) == [1] * 15
        assert vlm.statuses[429] == 2 and vlm.statuses[500] == 1 and vlm.statuses["hang"] == 1
        assert vlm.auth_failures == 0
        # bounded concurrency: never more than --concurrency requests at once (2 overlap during the hang)
        assert 2 <= vlm.max_in_flight <= 3

        stats = summary["vlm"]["stats"]
        assert stats["rate_limited"] == 2 and stats["server_errors"] == 1 and stats["timeouts"] == 1
        assert stats["retries"] == 4 and stats["answered"] == 15
        assert stats["json_repaired"] == 1 and stats["json_rejected"] == 2
        assert summary["pending_images"] == 0
        qa_report = next(s for s in summary["stages"] if s["stage"] == "qa")
        assert (
            qa_report["problems"] == {"qa.description": 1, "qa.fine_grained": 2} and qa_report["errors"] == {}
        )
        qa = {r["image_id"]: r for r in _records(out / "qa.jsonl")}
        for r in qa.values():  # a partly unusable answer never yields a sample twice
            assert len({json.dumps(x, sort_keys=True) for x in r["samples"]}) == len(r["samples"])
        (lost,) = [r for r in qa.values() if "no JSON" in r.get("problems", {}).get("qa.fine_grained", "")]
        # without expressions, only objects with a unique name are asked about in words; object images
        # need no words and are all kept
        lost_families = Counter(s["family"] for s in lost["samples"])
        names = Counter(o["name"] for o in lost["objects"])
        assert lost_families["image_to_box"] == len(lost["objects"]) and lost_families["relation_qa"] == 0
        assert lost_families["text_to_box"] == sum(1 for n in names.values() if n == 1)

        # usage log: one line per answered request, cost from the configured prices
        usage = [json.loads(line) for line in (out / "usage.jsonl").read_text().splitlines()]
        assert len(usage) == 15
        for u in usage:
            assert u["cost_usd"] == pytest.approx(
                (u["prompt_tokens"] * 2.5 + u["completion_tokens"] * 10) / 1e6
            )
        assert summary["vlm"]["usage_this_run"]["cost_usd"] == pytest.approx(
            sum(u["cost_usd"] for u in usage), abs=1e-5
        )
        assert summary["vlm"]["usage_this_run"]["cost_usd"] > 0

        # the export: valid training data with every sample family
        train = json.loads((out / "train.json").read_text())
        assert validate_samples(train, photos, "train.json") == len(train) > 0
        # ... and the trainer's own loader reads every sample back
        from tinygg.data.schema import read_samples

        loaded = read_samples(out / "train.json")
        assert [s.id for s in loaded] == [s["id"] for s in train]
        assert sum(len(s.objects) for s in loaded) == sum(len(s.get("objects", [])) for s in train) > 0
        families = Counter(s["id"].split("#")[1] for s in train)
        assert set(families) == set(FAMILIES), families
        # the garbage description answer cost one image its description only
        assert families["description"] == 2 and families["conversation"] == 3
        for s in train:
            text = "".join(t["value"] for t in s["conversations"])
            assert text.count("<object>") == len(s.get("objects", []))
            W, H = Image.open(photos / s["image"]).size
            for x1, y1, x2, y2 in s.get("objects", []):
                assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
        stats_file = json.loads((out / "export_stats.json").read_text())
        assert stats_file["samples"] == len(train) and stats_file["images"] == 3
        fine = json.loads((out / "train_fine_grained.json").read_text())
        glob = json.loads((out / "train_global.json").read_text())
        assert len(fine) + len(glob) == len(train)

        # a second run with the same command sends nothing and rewrites the same export
        assert cli_main(_argv(photos, out, tiny_gdino, vlm.base_url)) == 0
        rerun = json.loads(capsys.readouterr().out)
        assert sum(vlm.answered.values()) == first_answers
        assert rerun["vlm"]["stats"].get("requests_sent", 0) == 0
        assert all(s["written"] == 0 for s in rerun["stages"] if s["stage"] != "export")
        assert json.loads((out / "train.json").read_text()) == train

        # other filter settings, applied again with --redo: no request, fewer samples, reasons counted
        assert (
            cli_main(
                _argv(
                    photos,
                    out,
                    tiny_gdino,
                    vlm.base_url,
                    "--stages",
                    "filter,export",
                    "--redo",
                    "--max-boxes",
                    "1",
                )
            )
            == 0
        )
        capsys.readouterr()
        assert sum(vlm.answered.values()) == first_answers
        strict = json.loads((out / "train.json").read_text())
        assert 0 < len(strict) < len(train)
        assert json.loads((out / "export_stats.json").read_text())["dropped"]["too_many_boxes"] == len(
            train
        ) - len(strict)
        assert {s["id"].split("#")[1] for s in strict} == {"text_to_box", "box_to_text"}  # 1 box each

    # the key is used (the server checked it) but never printed, logged or written
    captured = capsys.readouterr()
    assert KEY not in captured.out + captured.err + caplog.text
    assert KEY not in _files_text(out)


def test_bad_key_stops_the_run_with_a_clear_error(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-123456")
    with ScriptedVLM() as vlm:
        rc = cli_main(
            _vlm_argv(
                photos, tmp_path / "o", vlm.base_url, "--stages recognise --backoff 0.01 --concurrency 1"
            )
        )
        err = capsys.readouterr().err
    assert rc == 1 and "answered 401" in err and "OPENAI_API_KEY" in err
    assert "sk-wrong-key-123456" not in err
    assert vlm.auth_failures == 1  # not retried, and the run stopped at the first refusal


def test_a_corrupt_image_gets_an_error_record_and_the_others_go_on(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    images = tmp_path / "images"
    images.mkdir()
    (images / "astronaut.png").write_bytes((photos / "astronaut.png").read_bytes())
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with ScriptedVLM() as vlm:
        assert cli_main(_vlm_argv(images, tmp_path / "o", vlm.base_url, "--stages recognise")) == 0
        capsys.readouterr()
    records = {r["image_id"]: r for r in _records(tmp_path / "o" / "recognise.jsonl")}
    assert (
        records["broken.png"]["error"].startswith("unreadable image:")
        and "broken.png" in records["broken.png"]["error"]
    )
    assert records["astronaut.png"]["names"] == NAMES_BY_SIZE[(512, 512)]
    assert sum(vlm.answered.values()) == 1


def test_server_down_leaves_images_pending_and_a_rerun_finishes(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "o"
    faults = {("recognise", i): [500, 500, 500] for i in range(3)}
    with ScriptedVLM(faults) as vlm:
        argv = _vlm_argv(photos, out, vlm.base_url, "--stages recognise --max-retries 1 --backoff 0.01")
        assert cli_main(argv) == 3  # every image failed twice (1 retry): pending, exit 3
        assert _records(out / "recognise.jsonl") == []
        assert cli_main(argv) == 0  # third attempt still fails, the retry (fourth) is answered
        capsys.readouterr()
    records = _records(out / "recognise.jsonl")
    assert sorted(r["image_id"] for r in records) == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert sorted(vlm.answered.values()) == [1, 1, 1]


# The interrupted-run scenario: 3 recognise + 3 relate + 1 qa answer, then the server stops answering.
# The image of that qa answer has no qa record yet (its other two requests are unanswered), so that
# answer exists only in the cache when the run dies.
_ANSWERS_BEFORE_DEATH = 7


def _assert_interrupted(vlm: ScriptedVLM, out: Path) -> None:
    assert sum(vlm.answered.values()) == _ANSWERS_BEFORE_DEATH
    assert len(_records(out / "answers.jsonl")) == _ANSWERS_BEFORE_DEATH  # every answer was persisted
    assert _records(out / "qa.jsonl") == [] and len(_records(out / "relate.jsonl")) == 3
    vlm.block_after = None
    vlm.release.set()


def _assert_resumed_for_free(vlm: ScriptedVLM, summary: dict[str, Any], out: Path, photos: Path) -> None:
    # every prompt answered exactly once across both runs: nothing paid twice
    assert sorted(vlm.answered.values()) == [1] * 15, vlm.answered
    by_stage = {s["stage"]: s for s in summary["stages"]}
    assert by_stage["recognise"]["done_before"] == 3 and by_stage["ground"]["done_before"] == 3
    assert by_stage["relate"]["done_before"] == 3 and by_stage["qa"]["done_before"] == 0
    assert summary["vlm"]["stats"]["cache_hits"] == 1 and summary["vlm"]["stats"]["answered"] == 8
    train = json.loads((out / "train.json").read_text())
    validate_samples(train, photos, "train.json")
    assert {s["id"].split("#")[1] for s in train} == set(FAMILIES)
    assert KEY not in _files_text(out)


class _Crash(BaseException):
    """Stands for the process dying: not an ``Exception``, so nothing in the pipeline handles it."""


def test_crashed_run_resumes_without_repeating_a_request(
    photos: Path,
    tiny_gdino: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "out"
    persist = AnswerCache.put

    def persist_then_die(self: AnswerCache, *args: Any, **kwargs: Any) -> None:
        persist(self, *args, **kwargs)
        if len(self) == _ANSWERS_BEFORE_DEATH:
            raise _Crash

    with ScriptedVLM({("recognise", 1): [429]}) as vlm:
        vlm.block_after = _ANSWERS_BEFORE_DEATH
        argv = _argv(photos, out, tiny_gdino, vlm.base_url, "--concurrency", "2")
        monkeypatch.setattr(AnswerCache, "put", persist_then_die)
        with pytest.raises(_Crash):
            cli_main(argv)
        monkeypatch.setattr(AnswerCache, "put", persist)
        _assert_interrupted(vlm, out)
        capsys.readouterr()
        assert cli_main(argv) == 0
        summary = json.loads(capsys.readouterr().out)
    _assert_resumed_for_free(vlm, summary, out, photos)


@pytest.mark.slow  # a fresh interpreter imports torch and transformers: ~10-30 s on 2 shared cores
def test_killed_run_resumes_without_repeating_a_request(
    photos: Path,
    tiny_gdino: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OPENAI_API_KEY": KEY,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    with ScriptedVLM({("recognise", 1): [429]}) as vlm:
        vlm.block_after = _ANSWERS_BEFORE_DEATH
        argv = _argv(photos, out, tiny_gdino, vlm.base_url, "--concurrency", "2")
        proc = subprocess.Popen(
            [sys.executable, "-m", "data_pipeline.cli", *argv],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            answers = out / "answers.jsonl"
            while time.monotonic() < deadline:  # wait until the answers are persisted, then kill
                if len(_records(answers)) >= _ANSWERS_BEFORE_DEATH and proc.poll() is None:
                    break
                assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
                time.sleep(0.1)
            else:
                raise AssertionError(f"the first run never reached {_ANSWERS_BEFORE_DEATH} answers")
            time.sleep(0.3)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        assert KEY not in err.decode(errors="replace")
        _assert_interrupted(vlm, out)

        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        assert cli_main(argv) == 0
        summary = json.loads(capsys.readouterr().out)
    _assert_resumed_for_free(vlm, summary, out, photos)


def test_shards_write_apart_and_export_merges_them(
    photos: Path,
    tiny_gdino: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "out"
    with ScriptedVLM() as vlm:
        for shard in ("0/2", "1/2"):
            assert (
                cli_main(_argv(photos, out, tiny_gdino, vlm.base_url, "--shard", shard, "--json-mode")) == 0
            )
        capsys.readouterr()
    assert vlm.response_formats == {'{"type": "json_object"}': 15}
    assert sorted(vlm.answered.values()) == [1] * 15  # the shards never asked the same thing
    ids = [sorted(r["image_id"] for r in _records(out / f"recognise.shard{i}of2.jsonl")) for i in range(2)]
    assert sorted(ids[0] + ids[1]) == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert not set(ids[0]) & set(ids[1]) and not (out / "recognise.jsonl").exists()
    per_shard = [json.loads((out / f"train.shard{i}of2.json").read_text()) for i in range(2)]
    assert cli_main(["pipeline", "--images", str(photos), "--out", str(out), "--stages", "export"]) == 0
    merged = json.loads((out / "train.json").read_text())
    assert sorted(s["id"] for s in merged) == sorted(s["id"] for s in per_shard[0] + per_shard[1])
    assert validate_samples(merged, photos, "train.json") == len(merged)
