"""The command line: help, argument errors, settings from the environment, back-off, stage order."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from PIL import Image

from data_pipeline.answer_cache import AnswerCache
from data_pipeline.cli import main, register
from data_pipeline.images import Shard, list_images
from data_pipeline.pipeline import parse_stages
from data_pipeline.usage import Prices, UsageLog
from data_pipeline.vlm_client import VLMClient, VLMSettings


def test_register_adds_pipeline_with_a_handler() -> None:
    parser = argparse.ArgumentParser(prog="tinygg data")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pipeline", "--images", "a", "--out", "b", "--shard", "1/4"])
    assert callable(args.func) and args.shard == "1/4" and args.box_threshold == 0.35
    text = parser._subparsers._group_actions[0].choices["pipeline"].format_help()
    for flag in (
        "--stages",
        "--concurrency",
        "--shard",
        "--base-url",
        "--model",
        "--grounding-model",
        "--box-threshold",
        "--price-input",
        "--api-key-env",
    ):
        assert flag in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shard", "4/4"], "--shard i/n needs 0 <= i < n"),
        (["--shard", "two"], "--shard must look like i/n"),
        (["--stages", "recognise,paint"], "unknown stage(s) ['paint']"),
        (["--concurrency", "0"], "--concurrency must be >= 1"),
        (["--base-url", "localhost:8000"], "--base-url must start with http"),
        (["--box-threshold", "2"], "--box-threshold must lie in [0, 1]; got 2.0"),
        (["--max-option-iou", "1.5"], "--max-option-iou must lie in [0, 1]"),
    ],
)
def test_argument_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rc = main(
        ["pipeline", "--images", str(tmp_path), "--out", str(tmp_path / "out"), "--stages", "ground", *argv]
    )
    assert rc == 2
    assert message in capsys.readouterr().err


def test_a_stage_without_its_input_says_which_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert (
        main(["pipeline", "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--stages", "filter"]) == 1
    )
    assert "run the 'qa' stage first" in capsys.readouterr().err


def test_stage_order_shards_and_image_listing(tmp_path: Path) -> None:
    assert parse_stages("export,recognise") == ["recognise", "export"]
    assert parse_stages(None)[0] == "recognise"
    for name in ("b.png", "a.jpg", "sub/c.JPEG", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        if name.endswith("txt"):
            (tmp_path / name).write_text("x")
        else:
            Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG" if name.endswith("png") else "JPEG")
    ids = list_images(tmp_path)
    assert ids == ["a.jpg", "b.png", "sub/c.JPEG"]
    parts = [Shard(i, 2).take(ids) for i in range(2)]
    assert sorted(parts[0] + parts[1]) == ids and not set(parts[0]) & set(parts[1])
    assert Shard.parse("1/2").suffix == ".shard1of2" and Shard.parse(None).suffix == ""
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        list_images(tmp_path / "missing")


def test_settings_from_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINYGG_VLM_BASE_URL", "http://vlm.local:8000/v1")
    monkeypatch.setenv("TINYGG_VLM_MODEL", "qwen-vl")
    monkeypatch.setenv("TINYGG_VLM_PRICE_INPUT", "1.5")
    s = VLMSettings.from_env(concurrency=None, model=None)
    assert (s.base_url, s.model, s.concurrency, s.prices.input_per_mtok) == (
        "http://vlm.local:8000/v1",
        "qwen-vl",
        4,
        1.5,
    )
    s = VLMSettings.from_env(model="gpt-4o-mini", prices=Prices(0.1, 0.2))
    assert s.model == "gpt-4o-mini" and s.prices.output_per_mtok == 0.2
    assert "key" not in repr(s).replace("api_key_env", "")  # the key is not a setting


def test_backoff_honours_retry_after_doubles_and_caps(tmp_path: Path) -> None:
    client = VLMClient(
        VLMSettings(backoff_base_s=1.0, backoff_max_s=5.0),
        AnswerCache(tmp_path / "a.jsonl"),
        UsageLog(tmp_path / "u.jsonl", Prices()),
    )
    assert client._backoff(0, retry_after=2.5) == 2.5
    assert client._backoff(3, retry_after=100.0) == 5.0
    for attempt, ceiling in ((0, 1.0), (1, 2.0), (2, 4.0), (5, 5.0)):
        delays = [client._backoff(attempt, None) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_the_cli_loads_without_the_openai_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tinygg`` registers this command at start-up: it must not need the optional ``data`` extra."""
    import importlib
    import sys

    for name in [m for m in sys.modules if m == "data_pipeline" or m.startswith("data_pipeline.")]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    monkeypatch.setitem(sys.modules, "openai", None)  # `import openai` now fails
    cli = importlib.import_module("data_pipeline.cli")
    cli.register(argparse.ArgumentParser().add_subparsers())
    vlm_client = importlib.import_module("data_pipeline.vlm_client")
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'tinygroundinggpt\[data\]'"):
        vlm_client._import_openai()


def test_tinygg_data_pipeline_reaches_this_handler() -> None:
    from data_pipeline.cli import handle_pipeline
    from tinygg.cli import build_parser

    args = build_parser().parse_args(
        ["data", "pipeline", "--images", "imgs", "--out", "synth", "--shard", "0/2"]
    )
    assert args.func is handle_pipeline and args.shard == "0/2"
