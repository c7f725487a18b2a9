"""`tinygg demo`: its pieces (baselines, DiG supervision, REC split files) and a whole `--quick` run."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from dig.pairs import pairs_to_samples
from tinygg import demo
from tinygg.boxes import box_iou, parse_boxes, square_to_pixel


def test_best_constant_box_finds_the_common_box() -> None:
    boxes = np.array([[40, 30, 60, 50]] * 8 + [[0, 0, 10, 10], [100, 80, 120, 95]], float)
    const = demo.best_constant_box(boxes, (128, 96))
    hits = box_iou(np.array([const]), boxes)[0] >= 0.5
    assert hits[:8].all() and hits.sum() == 8


def test_baseline_accuracy_per_split_and_all() -> None:
    samples = [SimpleNamespace(split="a", bbox=(0, 0, 10, 10)), SimpleNamespace(split="a", bbox=(50, 50, 60, 60)),
               SimpleNamespace(split="b", bbox=(0, 0, 10, 10))]
    hits = demo.baseline_hits(samples, lambda s: [0, 0, 10, 10])
    assert hits == [True, False, True]
    assert demo.accuracy_by_split(samples, hits) == {"a": 0.5, "b": 1.0, "all": pytest.approx(2 / 3)}


def test_pairs_become_supervised_dig_answers(tmp_path: Path) -> None:
    pairs = demo.make_pairs("p", demo.PairSet("dual", 3, seed=5), out=tmp_path, progress=False)
    samples = pairs_to_samples(pairs, tmp_path / "sft.json")
    rows = json.loads(samples.read_text())
    records = [json.loads(x) for x in pairs.read_text().splitlines()]
    assert len(rows) == len(records) == 3
    for row, rec in zip(rows, records):
        assert row["conversations"][0]["value"].count("<image>") == 2 == len(row["images"])
        assert all((tmp_path / p).exists() for p in row["images"])
        got = square_to_pixel(np.array(parse_boxes(row["conversations"][1]["value"]), float), rec["width"],
                              rec["height"])
        assert np.abs(got - np.array(rec["boxes"], float)).max() < 1.0  # 3-decimal box text


def test_every_demo_data_set_fits_its_framing() -> None:
    """One framing for a run (the shipped models are evaluated at it), and its largest scenes can be sampled."""
    from dig.scene import sample_scene

    plan = demo.from_scratch_plan(2.0)
    sets = [(c.zoom, c.max_objects) for c in plan.corpora] + [(ps.zoom, ps.objects[1]) for ps in
                                                                plan.pair_sets.values()]
    assert {z for z, _ in sets} == {demo.DEMO_ZOOM}
    for zoom, n in sets:
        for seed in range(5):
            assert len(sample_scene(np.random.default_rng(seed), n_objects=n, zoom=zoom)) == n


def test_corpus_is_reused_only_when_every_setting_matches(tmp_path: Path) -> None:
    """A finished corpus is found again as it is; one made with other tasks or object counts is remade."""
    c = demo.Corpus("c", n=4, min_objects=1, max_objects=1, tasks=("text2box",), relations=False, seed=3,
                    test_fraction=0.25)
    folder = demo.make_corpus(c, tmp_path, progress=False)
    info = folder / "synth_info.json"
    stamp = info.stat().st_mtime_ns
    assert demo.make_corpus(c, tmp_path, progress=False) == folder and info.stat().st_mtime_ns == stamp
    for changed in (replace(c, tasks=("object2box",)), replace(c, min_objects=2, max_objects=2)):
        demo.make_corpus(changed, tmp_path, progress=False)
        made = json.loads(info.read_text())["config"]
        assert (made["tasks"], made["min_objects"]) == (list(changed.tasks), changed.min_objects)
    scenes = [json.loads(line)["scene"] for line in (folder / "scenes.jsonl").read_text().splitlines()]
    assert [len(sc["objects"]) for sc in scenes] == [2] * 4  # the files are the last remake's, not the first's
    assert all("text2box" in r["id"] for r in json.loads((folder / "train.json").read_text()))


def test_question_first_plan_asks_every_question_before_the_image(tmp_path: Path) -> None:
    """--question-first: its own corpora (one question per image, asked before it), and REC asked the same way."""
    from tinygg.build import build_model
    from tinygg.evaluate.rec import DEFAULT_PROMPT

    default, qf = demo.from_scratch_plan(2.0, question_first=False), demo.from_scratch_plan(2.0, question_first=True)
    assert default.rec_prompt == DEFAULT_PROMPT and not any(c.question_first for c in default.corpora)
    assert qf.rec_prompt == DEFAULT_PROMPT + "\n<image>"
    assert all(c.question_first and c.turns == 1 for c in qf.corpora)
    names = {c.name for c in qf.corpora}
    assert not names & {c.name for c in default.corpora}  # one run folder can hold both layouts' data
    assert set(qf.rec_tests) == names and {p.split("/")[0] for st in qf.stages for p, _ in st.data} <= names | {
        "dig_sft.json"}

    corpus = replace(qf.corpora[1], n=4, test_fraction=0.5)
    folder = demo.make_corpus(corpus, tmp_path, progress=False)
    for row in json.loads((folder / "train.json").read_text()):
        assert row["conversations"][0]["value"].endswith("\n<image>")
    specs = demo.split_rec_rows(folder / "test_rec.jsonl", tmp_path / "rows", limit=2)
    model, processor = build_model("tiny")
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    demo.eval_rec(ckpt, specs, tmp_path / "eval", prompt=qf.rec_prompt)
    rows = [json.loads(x) for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(r["prompt"].startswith("Output the coordinate of ") and r["prompt"].endswith("<image>")
                        for r in rows)


def test_eval_resumes_whether_paths_are_given_relative_or_absolute(tmp_path: Path, monkeypatch) -> None:
    corpus = replace(demo.from_scratch_plan(2.0).corpora[1], n=4, test_fraction=0.5)
    folder = demo.make_corpus(corpus, tmp_path, progress=False)
    from tinygg.build import build_model

    model, processor = build_model("tiny")
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    for spelling in (Path("."), tmp_path):  # a resumed `tinygg demo --out` may spell the run folder either way
        specs = demo.split_rec_rows(folder / "test_rec.jsonl", spelling / "rows", limit=2)
        demo.eval_rec(spelling / "ckpt", specs, spelling / "eval")
    assert len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == 2 * len(specs)


def test_rec_rows_split_by_relation(tmp_path: Path) -> None:
    rows = [{"img_path": "images/a.png", "expression": "the red cube", "bbox": [1, 2, 3, 4]},
            {"img_path": "images/a.png", "expression": "the cube left of the red sphere", "bbox": [1, 2, 3, 4]}]
    (tmp_path / "test_rec.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    specs = demo.split_rec_rows(tmp_path / "test_rec.jsonl", tmp_path / "out")
    assert [s.rsplit(":", 1)[1] for s in specs] == ["attributes", "relations"]
    rel = json.loads((tmp_path / "out" / "relations.jsonl").read_text())
    assert rel["expression"].endswith("red sphere") and Path(rel["img_path"]).is_absolute()
    (one,) = demo.split_rec_rows(tmp_path / "test_rec.jsonl", tmp_path / "out", split="single object")
    assert one.rsplit(":", 1)[1] == "single object"
    assert len((tmp_path / "out" / "single_object.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["image-first", "question-first"])
def test_quick_demo_end_to_end(layout: str, tmp_path: Path) -> None:
    from tinygg.build import build_model

    model, processor = build_model("tiny")
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    out = tmp_path / "demo"
    args = SimpleNamespace(out=str(out), quick=True, from_scratch=False, stage3=str(ckpt), dig=str(ckpt),
                           threads=1, hours=1.0, ship=False, layout=layout)
    assert demo._handler(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    table = m["rec"]["table"]
    assert {"constant box", "random object"} <= set(table)
    for row in table.values():
        assert all(v is None or 0.0 <= v <= 1.0 for v in row.values())
    # the DiG numbers are the scorer's, and a random model writes no valid box list
    assert m["dig"]["before"]["n"] == demo.SIZES["quick"].dig_pairs
    assert set(m["brief_training"]) == {"stage1", "stage2", "stage3", "dig_sft", "dig reward"}
    assert m["brief_training"]["stage1"]["steps"] == demo.SIZES["quick"].train_steps
    # the table's model rows reproduce from the per-sample predictions; `all` counts the multi-object rows only
    for label, sub in (("TinyGG tiny (stage3)", "stage3"), ("TinyGG tiny (dig)", "dig")):
        rows = [json.loads(x) for x in (out / "rec" / sub / "predictions.jsonl").read_text().splitlines()]
        assert demo.SINGLE_OBJECT not in {r["split"] for r in rows}
        for split in {r["split"] for r in rows}:
            hits = [r["hit"] for r in rows if r["split"] == split]
            assert table[label][split] == pytest.approx(sum(hits) / len(hits))
        assert table[label]["all"] == pytest.approx(sum(r["hit"] for r in rows) / len(rows))
        single = [json.loads(x) for x in (out / "rec_single" / sub / "predictions.jsonl").read_text().splitlines()]
        assert single and {r["split"] for r in single} == {demo.SINGLE_OBJECT}
        assert table[label][demo.SINGLE_OBJECT] == pytest.approx(sum(r["hit"] for r in single) / len(single))
    # the models are asked, and trained briefly, in the layout given
    qf = demo.LAYOUTS[layout]
    assert m["rec_prompt"] == demo.rec_prompt(qf)
    for folder in ("rec/stage3", "rec_single/dig"):
        asked = [json.loads(x)["prompt"] for x in (out / folder / "predictions.jsonl").read_text().splitlines()]
        assert asked and all(p.endswith("\n<image>") == qf for p in asked)
    trained = json.loads((out / "data" / "fresh" / "train.json").read_text())
    assert all(r["conversations"][0]["value"].endswith("<image>") == qf for r in trained)
    # on one-object scenes the "random object" is the target itself
    assert table["random object"][demo.SINGLE_OBJECT] == 1.0
    report = (out / "report.md").read_text()
    assert "constant box" in report and "after DiG" in report
    assert (out / "curves.png").exists() and any((out / "rec" / "stage3" / "vis").iterdir())


@pytest.mark.slow
def test_from_scratch_miniature_runs_every_stage_resumes_and_ships(tmp_path: Path) -> None:
    full = demo.from_scratch_plan(2.0)
    plan = replace(full, corpora=[replace(c, n=6, test_fraction=0.4) for c in full.corpora],
                   pair_sets={k: replace(ps, n=3) for k, ps in full.pair_sets.items()},
                   steps_scale=1 / 2000, eval_limit=4, image_token_merge=2)
    out = tmp_path / "run"
    ship_root, registry = tmp_path / "shipped", tmp_path / "registry.yaml"
    registry.write_text("version: 1\nmodels: []\n")
    s = demo.from_scratch(out, plan, ship_to=(ship_root, registry), progress=False)
    assert list(s["stages"]) == ["stage1", "stage2", "stage3", "dig"]
    for name in ("stage1", "stage2", "stage3", "dig"):  # the model stage 1 built, carried through every stage
        assert json.loads((out / name / "final" / "config.json").read_text())["image_token_merge"] == 2
    for name in ("stage1", "stage2", "stage3"):
        assert (out / name / "final" / "model.safetensors").exists()
        assert set(s["stages"][name]["rec"]) == set(plan.rec_tests)
    assert s["dig"]["before"]["n"] == 3 == s["dig"]["after"]["n"]
    assert list(s["dig"]["by_step"]) == ["stage3", *[ph.name for ph in plan.dig_warmup], "dig"]
    sft = json.loads((out / "data" / "dig_sft.json").read_text())
    assert len(sft) == 6  # single + dual pairs, 3 each
    for phase in plan.dig_warmup:  # the DiG stage's supervised phases, each on its own pair sets
        assert (out / phase.name / "final" / "model.safetensors").exists()
        pair_files = [p for p, _ in phase.data if p.endswith("_sft.json")]
        assert pair_files and all(len(json.loads((out / "data" / p).read_text())) == 3 for p in pair_files)
    assert "dig_sft (supervised)" in (out / "report.md").read_text()
    # shipped: half precision, registered with the report
    from safetensors import safe_open

    for name in demo.SHIPPED.values():
        with safe_open(str(ship_root / name / "model.safetensors"), "pt") as f:
            assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}  # noqa: SIM118 (safe_open is not iterable)
        assert (ship_root / name / "demo_report.md").exists()
        assert name in registry.read_text()
    # a rerun skips every finished stage: no stage directory changes
    before = {p: p.stat().st_mtime for p in out.glob("stage*/final/model.safetensors")}
    demo.from_scratch(out, plan, progress=False)
    assert {p: p.stat().st_mtime for p in out.glob("stage*/final/model.safetensors")} == before


@pytest.mark.slow
def test_dig_stage_alone_from_a_stage3_checkpoint_ships_only_the_dig_result(tmp_path: Path) -> None:
    """--dig-from: no stage 1-3 training; the given checkpoint is the stage-3 row, the DiG stage (warm start,
    GRPO) starts from it, and only the DiG checkpoint is shipped and registered."""
    from tinygg.build import build_model

    full = demo.from_scratch_plan(2.0)
    plan = replace(full, corpora=[replace(c, n=6, test_fraction=0.4) for c in full.corpora],
                   pair_sets={k: replace(ps, n=2) for k, ps in full.pair_sets.items()},
                   steps_scale=1 / 3000, eval_limit=3)
    model, processor = build_model("tiny")
    ckpt = tmp_path / "stage3"
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    out, ship_root, registry = tmp_path / "run", tmp_path / "shipped", tmp_path / "registry.yaml"
    registry.write_text("version: 1\nmodels: []\n")
    s = demo.from_scratch(out, plan, ship_to=(ship_root, registry), progress=False, stage3_from=ckpt)
    assert list(s["stages"]) == ["stage3", "dig"] and s["stages"]["stage3"]["checkpoint"] == str(ckpt)
    assert not any((out / st.name).exists() for st in plan.stages)
    init = (out / plan.dig_warmup[0].name / "train_config.yaml").read_text()
    assert f"init: {ckpt}" in init
    assert [p.name for p in ship_root.iterdir()] == [demo.SHIPPED["dig"]]
    from model_zoo.registry import Registry

    assert [e.name for e in Registry.from_file(registry).entries()] == [demo.SHIPPED["dig"]]
    assert f"starts from `{ckpt}`" in (out / "report.md").read_text()


def test_wall_clock_sums_sessions_and_survives_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    with demo.WallClock(path):
        pass
    first = json.loads(path.read_text())["seconds"]
    path.write_text(json.dumps({"seconds": 100.0}))  # an earlier session that counted 100 s
    clock = demo.WallClock(path, every=0.05).__enter__()
    import time

    time.sleep(0.2)  # killed here: only the heartbeat has written
    beat = json.loads(path.read_text())["seconds"]
    clock.__exit__()
    assert 0 <= first < 1 and 100.0 < beat <= json.loads(path.read_text())["seconds"] < 101


def _shipped() -> list:
    from model_zoo.registry import SHIPPED_REGISTRY, Registry

    shipped = {e.name for e in Registry.from_file(SHIPPED_REGISTRY).entries()}
    names = [n for n in demo.SHIPPED.values() if n in shipped]
    reason = "no trained tiny checkpoint shipped yet (`tinygg demo --from-scratch --ship` makes them)"
    return names or [pytest.param(None, marks=pytest.mark.skip(reason=reason))]


@pytest.mark.slow
@pytest.mark.parametrize("name", _shipped())
def test_shipped_checkpoint_evaluates_to_the_numbers_on_its_card(name: str, tmp_path: Path) -> None:
    """The REC test of the from-scratch run, regenerated from its seed, scored on the shipped weights, gives
    the registry's (and so the card's) numbers."""
    from model_zoo.registry import SHIPPED_REGISTRY, Registry
    from tinygg.inference import resolve_model_path

    plan = demo.from_scratch_plan(demo.NOMINAL_HOURS)
    corpus = next(c for c in plan.corpora if c.name == plan.rec_tests[-1])
    folder = demo.make_corpus(corpus, tmp_path / "data", progress=False)
    specs = demo.split_rec_rows(folder / "test_rec.jsonl", tmp_path / "rows", plan.eval_limit)
    m = demo.eval_rec(resolve_model_path(name), specs, tmp_path / "eval", prompt=plan.rec_prompt)
    card = Registry.from_file(SHIPPED_REGISTRY).get(name).metrics["rec"]
    for split, v in m["splits"].items():
        assert v["acc"] == pytest.approx(card[split], abs=1e-9), split
