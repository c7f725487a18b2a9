"""Model zoo registry: the shipped file, validation errors, name suggestions, add -> list -> verify via the
CLI, model cards from eval JSON, and publishing without credentials."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from model_zoo import (
    ChecksumMismatchError,
    PublishError,
    RegistryError,
    UnknownModelError,
    card,
    load_registry,
    publish,
    resolve_model,
)
from model_zoo.cli import main, register
from model_zoo.hub_publish import plan_publish
from model_zoo.model_card import EvalFileError, load_eval
from model_zoo.registry import SHIPPED_REGISTRY, Registry


@pytest.fixture(autouse=True)
def zoo_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _entry(**over) -> dict:
    e = {
        "name": "ckpt-a",
        "kind": "checkpoint",
        "preset": "tiny",
        "stage": "stage3",
        "source": {"kind": "url", "url": "https://example.org/a/"},
        "files": [{"path": "model.safetensors", "sha256": "a" * 64, "size": 10}],
    }
    e.update(over)
    return e


def _load(*entries: dict) -> Registry:
    return Registry.from_mapping({"version": 1, "models": list(entries)}, origin="my-registry.yaml")


def test_shipped_registry_loads_with_pinned_components():
    reg = Registry.from_file(SHIPPED_REGISTRY)
    expected = {
        "openai/clip-vit-large-patch14-336",
        "facebook/dinov2-large",
        "Qwen/Qwen2.5-1.5B-Instruct",
        "Qwen/Qwen2.5-3B-Instruct",
        "Qwen/Qwen2.5-7B-Instruct",
    }
    assert expected <= set(reg.names())
    for name in expected:
        e = reg.get(name)
        assert e.source.kind == "hf" and e.source.pinned, name
        assert re.fullmatch(r"[0-9a-f]{40}", e.source.revision)
        assert not any(p.endswith((".bin", ".pt")) for p in e.source.allow_patterns) or e.convert_pickle
    assert load_registry().get("facebook/dinov2-large").files[0].path == "model.safetensors"


@pytest.mark.parametrize(
    "over, field, expected",
    [
        (
            {"files": [{"path": "model.safetensors", "sha256": "xyz"}]},
            r"files\[0\]\.sha256",
            "64 lowercase hex",
        ),
        ({"kind": "model"}, "kind", "component, checkpoint"),
        ({"stage": "stage9"}, "stage", "stage1, stage2, stage3, dig, finetune"),
        ({"preset": None}, "preset", "preset"),
        (
            {"source": {"kind": "hf", "repo_id": "a/b", "revision": "abc1234"}},
            "source.revision",
            "40-character",
        ),
        ({"source": {"kind": "ftp", "url": "x"}}, "source.kind", "hf, url, local"),
        ({"source": {"kind": "url", "url": "example.org"}}, "source.url", "http"),
        ({"files": []}, "files", "at least one file"),
        ({"metrics": {"rec": {"average": "high"}}}, "metrics.rec.average", "a number"),
        ({"colour": "red"}, "colour", "one of"),
    ],
)
def test_validation_errors_name_file_entry_and_field(over, field, expected):
    with pytest.raises(RegistryError) as info:
        _load(_entry(**over))
    msg = str(info.value)
    assert "my-registry.yaml" in msg and "'ckpt-a'" in msg
    assert re.search(rf"field '{field}'", msg), msg
    assert expected in msg


def test_duplicate_names_and_unknown_parents_are_errors(tmp_path):
    with pytest.raises(RegistryError, match=r"entry 'ckpt-a' \(#1\), field 'name'"):
        _load(_entry(), _entry())
    p = tmp_path / "reg.yaml"
    p.write_text(yaml.safe_dump({"version": 1, "models": [_entry(parent="ckpt-b")]}))
    with pytest.raises(RegistryError, match=r"entry 'ckpt-a', field 'parent'"):
        load_registry([p])


def test_unknown_name_suggests_closest_names(tmp_path):
    reg = _load(_entry(), _entry(name="tinygg-tiny-demo"), _entry(name="tinygg-tiny-dig"))
    with pytest.raises(UnknownModelError) as info:
        reg.get("tinygg-tiny-dmeo")
    assert "Did you mean: tinygg-tiny-demo" in str(info.value)
    with pytest.raises(UnknownModelError, match="Qwen/Qwen2.5-3B-Instruct"):
        resolve_model("qwen2.5-3b-instruct-x")
    with pytest.raises(UnknownModelError, match="neither an existing directory nor a zoo model name"):
        resolve_model(str(tmp_path / "no" / "such" / "dir"))
    assert reg.get("TINYGG-TINY-DEMO").name == "tinygg-tiny-demo"  # case slips are forgiven


def _checkpoint(tmp_path: Path, name: str = "ckpt") -> Path:
    d = tmp_path / name
    d.mkdir()
    save_file({"w": torch.randn(8, 8)}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "tinygg"}))
    (d / "tokenizer.json").write_text("{}")
    return d


def _rec_json(path: Path, accs: dict[str, float]) -> Path:
    path.write_text(
        json.dumps(
            {
                "metric": "acc@0.5",
                "splits": {k: {"acc": v, "n": 100, "parse_failures": 1} for k, v in accs.items()},
                "average": sum(accs.values()) / len(accs),
            }
        )
    )
    return path


def zoo(command: str) -> int:
    """Run ``tinygg zoo COMMAND`` (paths in tests have no spaces)."""
    return main(["zoo", *command.split()])


def test_add_list_verify_round_trip_through_the_cli(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path)
    torch.save({"w": torch.zeros(1)}, ckpt / "extra.pt")  # a pickle beside safetensors: not registered
    rec = _rec_json(tmp_path / "rec.json", {"synthetic_test": 0.5, "synthetic_val": 0.75})
    assert zoo(f"add my-ckpt --from {ckpt} --preset tiny --stage stage3 --eval {rec}") == 0
    assert "registered my-ckpt: 3 files" in capsys.readouterr().out
    user_reg = yaml.safe_load((tmp_path / "home" / "registry.yaml").read_text())
    [entry] = user_reg["models"]
    assert {f["path"] for f in entry["files"]} == {"model.safetensors", "config.json", "tokenizer.json"}
    assert entry["source"] == {"kind": "local", "path": str(ckpt.resolve())}
    assert entry["metrics"]["rec"]["average"] == pytest.approx(0.625)

    assert zoo("list") == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("my-ckpt"))
    assert row.split() == ["my-ckpt", "checkpoint", "tiny", "stage3", "local", "62.50", "local"]
    assert "Qwen/Qwen2.5-3B-Instruct" in out

    assert zoo("verify my-ckpt") == 0
    assert "OK (3 ok, 1 unchecked)" in capsys.readouterr().out  # extra.pt: never loaded
    assert resolve_model("my-ckpt") == ckpt.resolve()

    # a child checkpoint names its parent; an unknown parent is refused with a suggestion
    assert zoo(f"add my-ckpt-dig --from {ckpt} --preset tiny --stage dig --parent my-ckpt") == 0
    assert zoo(f"add orphan --from {ckpt} --preset tiny --stage dig --parent my-ckp") == 2
    assert "Did you mean: my-ckpt" in capsys.readouterr().err
    assert zoo(f"add my-ckpt --from {ckpt} --preset tiny --stage stage3") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert zoo(f"add no-preset --from {ckpt} --stage stage3") == 2
    assert "entry 'no-preset' (#0), field 'preset'" in capsys.readouterr().err

    # tampering is caught by verify and by resolve
    (ckpt / "config.json").write_text(json.dumps({"model_type": "evil"}))
    assert zoo("verify my-ckpt") == 1
    assert "mismatch  config.json" in capsys.readouterr().out
    with pytest.raises(ChecksumMismatchError, match="config.json"):
        resolve_model("my-ckpt")


def test_card_renders_table1_layout_from_eval_json(tmp_path):
    ckpt = _checkpoint(tmp_path)
    accs = {
        "refcoco_val": 0.9,
        "RefCOCO_testA": 0.92,
        "refcoco_testB": 0.85,
        "refcoco+_val": 0.8,
        "refcoco+_testA": 0.87,
        "refcoco+_testB": 0.75,
        "refcocog_val": 0.83,
        "refcocog_test": 0.84,
        "synthetic_test": 0.612,
    }
    rec = _rec_json(tmp_path / "rec.json", accs)
    pope = tmp_path / "pope.json"
    pope.write_text(
        json.dumps(
            {
                "metric": "pope",
                "splits": {
                    s: {"accuracy": 0.9, "f1": 0.89, "yes_ratio": 0.43, "precision": 0.95, "recall": 0.84}
                    for s in ("random", "popular", "adversarial")
                },
            }
        )
    )
    dig = tmp_path / "dig.json"
    dig.write_text(json.dumps({"metric": "dig", "splits": {"mixed": {"f1": 0.41, "mean_iou": 0.66}}}))
    from model_zoo.add_checkpoint import add

    add("card-ckpt", ckpt, preset="3b", stage="stage3", description="A test checkpoint.", progress=False)
    text = card("card-ckpt", [rec, pope, dig])
    header = (
        "| Model | LLM size | RefCOCO val | RefCOCO testA | RefCOCO testB | RefCOCO+ val | RefCOCO+ testA | "
        "RefCOCO+ testB | RefCOCOg val | RefCOCOg test | Avg |"
    )
    assert header in text
    mean8 = 100 * sum(v for k, v in accs.items() if k != "synthetic_test") / 8
    assert (
        f"| card-ckpt | 3B | 90.00 | 92.00 | 85.00 | 80.00 | 87.00 | 75.00 | 83.00 | 84.00 | {mean8:.2f} |"
    ) in text
    assert "| TinyGroundingGPT-3B (paper) | 3B | 89.16 |" in text
    assert "| synthetic_test | 61.20 |" in text
    assert (
        "| card-ckpt | 3B | 90.00 | 89.00 | 43.00 | 90.00 | 89.00 | 43.00 | 90.00 | 89.00 | 43.00 |" in text
    )
    assert "| mixed | 41.00 | – | – | 66.00 |" in text
    assert text.startswith("---\nlibrary_name: transformers")
    # with no eval files the card uses the registry's metrics (here: none)
    assert "No evaluation results recorded yet" in card("card-ckpt")


def test_card_from_registry_metrics_marks_a_partial_average(tmp_path):
    reg = _load(_entry(metrics={"rec": {"refcoco/val": 0.5, "refcoco/testA": 0.7, "average": 0.6}}))
    text = card("ckpt-a", registry=reg)
    assert "| ckpt-a | tiny | 50.00 | 70.00 | – | – | – | – | – | – | 60.00* |" in text
    assert "average over the 2 standard splits evaluated" in text


def test_eval_json_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metric": "acc@0.5", "splits": {"refcoco_val": {"acc": 87.5, "n": 10}}}))
    with pytest.raises(
        EvalFileError, match=r"bad\.json: field 'splits\.refcoco_val\.acc': expected a fraction"
    ):
        load_eval(bad)
    bad.write_text(json.dumps({"metric": "bleu", "splits": {"x": {}}}))
    with pytest.raises(EvalFileError, match="field 'metric'"):
        load_eval(bad)
    # a demo metrics.json bundling several documents is read too
    bad.write_text(
        json.dumps(
            {
                "rec": {"metric": "acc@0.5", "splits": {"synthetic": {"acc": 0.9}}},
                "dig": {"metric": "dig", "splits": {"mixed": {"f1": 0.5}}},
            }
        )
    )
    assert load_eval(bad) == {"rec": {"synthetic": 0.9, "average": 0.9}, "dig": {"mixed/f1": 0.5}}


def test_publish_needs_credentials_and_never_uploads_pickles(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    ckpt = _checkpoint(tmp_path)
    torch.save({"w": torch.zeros(1)}, ckpt / "optimizer.pt")
    with pytest.raises(PublishError, match="HF_TOKEN"):
        publish(str(ckpt), "me/ckpt")
    plan = plan_publish(str(ckpt), registry=Registry())
    assert sorted(plan.files) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert plan.readme is not None and "\n# ckpt\n" in plan.readme


def test_register_adds_every_command_to_the_zoo_group():
    parser = argparse.ArgumentParser(prog="tinygg")
    group = parser.add_subparsers(dest="command").add_parser("zoo")
    register(group.add_subparsers(dest="zoo_command"))
    help_text = group.format_help()
    for cmd in ("list", "info", "download", "verify", "add", "card", "publish", "convert"):
        assert cmd in help_text
    args = parser.parse_args(["zoo", "card", "x", "--eval", "a.json", "b.json", "--out", "README.md"])
    assert args.func.__name__ == "_cmd_card" and [str(p) for p in args.eval] == ["a.json", "b.json"]


def test_tinygg_cli_runs_zoo_commands(capsys):
    from tinygg.cli import main as tinygg_main

    assert tinygg_main(["zoo", "list"]) == 0
    assert "facebook/dinov2-large" in capsys.readouterr().out
    assert tinygg_main(["zoo", "info", "qwen2.5-3b-instruct"]) == 2  # a one-line error, not a traceback
    assert "Did you mean: Qwen/Qwen2.5-3B-Instruct" in capsys.readouterr().err


def test_checkpoint_inside_the_package_is_registered_relocatably(tmp_path, monkeypatch):
    import model_zoo.add_checkpoint as add_mod
    import model_zoo.registry as registry_mod
    from model_zoo.add_checkpoint import add

    fake_pkg = tmp_path / "site-packages" / "model_zoo"
    (fake_pkg / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(add_mod, "PACKAGE_DIR", fake_pkg)
    monkeypatch.setattr(registry_mod, "PACKAGE_DIR", fake_pkg)
    ckpt = _checkpoint(fake_pkg / "checkpoints", "tinygg-tiny-demo")
    reg_file = tmp_path / "shipped.yaml"
    shipped_text = SHIPPED_REGISTRY.read_text()
    reg_file.write_text(shipped_text)
    add("tinygg-tiny-demo", ckpt, preset="tiny", stage="stage3", registry_path=reg_file, progress=False)
    text = reg_file.read_text()
    assert text.startswith(shipped_text.rstrip("\n"))  # appended: comments and layout kept
    raw = yaml.safe_load(text)["models"][-1]
    assert raw["name"] == "tinygg-tiny-demo"
    assert raw["source"] == {"kind": "local", "path": "package://checkpoints/tinygg-tiny-demo"}
    reg = load_registry([reg_file])
    assert resolve_model("tinygg-tiny-demo", registry=reg) == ckpt
    # replacing it edits its own lines only: the other entries keep their layout and comments
    add(
        "tinygg-tiny-demo",
        ckpt,
        preset="tiny",
        stage="dig",
        registry_path=reg_file,
        overwrite=True,
        progress=False,
    )
    text = reg_file.read_text()
    assert text.startswith(shipped_text.rstrip("\n"))
    assert Registry.from_file(reg_file).get("tinygg-tiny-demo").stage == "dig"
    assert len(Registry.from_file(reg_file)) == len(Registry.from_file(SHIPPED_REGISTRY)) + 1


def test_replacing_an_entry_in_the_middle_keeps_every_other_line(tmp_path):
    """An overwritten entry is edited in place: the lines of every other entry, before and after it, and
    the comments stay byte for byte."""
    from model_zoo.registry import write_entry

    reg_file = tmp_path / "r.yaml"
    entries = [_entry(name=n) for n in ("alpha", "beta", "gamma")]
    for e in entries:
        write_entry(_load(e).get(e["name"]), reg_file)
    before = reg_file.read_text().replace("- name: gamma", "# the third one\n- name: gamma")
    reg_file.write_text(before)
    middle = _load(dict(entries[1], description="changed")).get("beta")
    write_entry(middle, reg_file, overwrite=True)
    after = reg_file.read_text()
    reg = Registry.from_file(reg_file)
    assert list(reg.names()) == ["alpha", "beta", "gamma"] and reg.get("beta").description == "changed"
    a, b = before.split("- name: beta"), after.split("- name: beta")
    assert a[0] == b[0]  # everything before beta
    assert a[1][a[1].index("# the third one"):] == b[1][b[1].index("# the third one"):]  # everything after it


def _shipped_local_checkpoints() -> list:
    reg = Registry.from_file(SHIPPED_REGISTRY)
    names = [e.name for e in reg.entries() if e.source.kind == "local"]
    reason = "no checkpoint shipped in model_zoo/registry.yaml yet (`tinygg demo --from-scratch` makes them)"
    return names or [pytest.param(None, marks=pytest.mark.skip(reason=reason))]


@pytest.mark.parametrize("name", _shipped_local_checkpoints())
def test_shipped_checkpoints_verify_and_have_a_card(name):
    reg = Registry.from_file(SHIPPED_REGISTRY)
    entry = reg.get(name)
    assert entry.source.path.startswith("package://"), "shipped checkpoints must be relocatable"
    assert resolve_model(name, download=False, registry=reg).is_dir()
    assert entry.metrics, f"{name}: record its eval results (tinygg zoo add ... --eval metrics.json)"
    assert "No evaluation results" not in card(name, registry=reg)


def test_publish_uploads_safetensors_configs_and_the_card(tmp_path, monkeypatch):
    calls: list[tuple[str, dict]] = []

    class RecordingApi:  # stands in for huggingface_hub.HfApi: records what would be sent
        def __init__(self, token=None, endpoint=None):
            calls.append(("init", {"token": token}))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", {"repo_id": repo_id, **kw}))

        def upload_folder(self, **kw):
            calls.append(("upload_folder", kw))
            return argparse.Namespace(commit_url="https://hub.example/me/ckpt/commit/1")

        def upload_file(self, **kw):
            calls.append(("upload_file", kw))
            return argparse.Namespace(commit_url="https://hub.example/me/ckpt/commit/2")

    monkeypatch.setattr("huggingface_hub.HfApi", RecordingApi)
    ckpt = _checkpoint(tmp_path)
    torch.save({"w": torch.zeros(1)}, ckpt / "training_state.pt")
    rec = _rec_json(tmp_path / "rec.json", {"refcoco_val": 0.5})
    url = publish(str(ckpt), "me/ckpt", token="hf_test", eval_json=[rec], registry=Registry())
    assert url == "https://hub.example/me/ckpt/commit/2"
    kinds = [c[0] for c in calls]
    assert kinds == ["init", "create_repo", "upload_folder", "upload_file"]
    assert calls[0][1]["token"] == "hf_test" and calls[1][1]["exist_ok"] is True
    assert sorted(calls[2][1]["allow_patterns"]) == ["config.json", "model.safetensors", "tokenizer.json"]
    readme = calls[3][1]["path_or_fileobj"].decode()
    assert calls[3][1]["path_in_repo"] == "README.md" and "| ckpt | – | 50.00 |" in readme


def test_card_reads_what_the_evaluators_write(tmp_path):
    """The eval JSON of `tinygg eval rec | pope | dig`, produced by their own summarising code."""
    from dig.evaluate import score_predictions
    from tinygg.evaluate.pope import summarise_pope
    from tinygg.evaluate.rec import summarise

    rec_rows = [{"split": "refcoco_testA", "hit": h, "parsed": True} for h in (1, 1, 1, 0)]
    rec_rows += [{"split": "synthetic", "hit": h, "parsed": h} for h in (1, 0)]
    pope_rows = [
        {"subset": "random", "label": lab, "pred": pred, "parsed": True}
        for lab, pred in (("yes", "yes"), ("yes", "no"), ("no", "no"), ("no", "yes"))
    ]
    pairs = [
        {
            "id": "p0",
            "boxes": [[0, 0, 50, 50]],
            "changes": [{"kind": "color"}],
            "difficulty": "single",
            "width": 100,
            "height": 100,
        }
    ]
    dig_result = score_predictions(pairs, ["[[0.0,0.0,0.5,0.5]]"])
    files = {
        "rec.json": summarise(rec_rows),
        "pope.json": summarise_pope(pope_rows),
        "dig.json": {k: v for k, v in dig_result.items() if k != "per_sample"},
    }
    for name, doc in files.items():
        (tmp_path / name).write_text(json.dumps(doc))
    text = card(str(_checkpoint(tmp_path)), [tmp_path / n for n in files], registry=Registry())
    assert "| ckpt | – | – | 75.00 | – |" in text  # RefCOCO testA in its Table 1 column
    assert "| synthetic | 50.00 |" in text
    assert "| ckpt | – | 50.00 | 50.00 | 50.00 | – | – | – | – | – | – |" in text  # POPE random: acc, F1, yes
    assert "| single | 100.00 | 100.00 | 100.00 | 100.00 |" in text
    assert "| overall | 100.00 | 100.00 | 100.00 | 100.00 |" in text
