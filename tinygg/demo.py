"""`tinygg demo`: the whole method on a CPU, with synthetic CLEVR-style data (flat renderer, no downloads).

Two modes:

* ``tinygg demo --from-scratch [--out DIR] [--hours H]`` trains the tiny preset from random init through the
  real pipeline: synthetic corpora and DiG pairs, stage 1 (single-object scenes: object image -> box and
  text -> box), stage 2 (multi-object REC with attributes), stage 3 (all grounding tasks with relations, plus
  the DiG question answered by supervision on single/dual pairs), then the DiG stage: a supervised warm start
  in three cycles on single-difference pairs of 1-3 objects with some REC replayed (``Plan.dig_warmup``), then
  GRPO on mixed pairs. ``--dig-from MODEL`` runs only the DiG stage, from a given stage-3 checkpoint.
  Every stage is a YAML of ``scripts/configs/demo/`` run by :func:`tinygg.train.run` (GRPO by
  :func:`dig.grpo.run_stage`), evaluated with :func:`tinygg.evaluate.rec.evaluate_rec` and
  :func:`dig.evaluate.score_predictions` after it. A restart skips finished stages (their ``final/``) and
  resumes the running one from its last ``checkpoint-*``. ``--ship`` copies the stage-3 and DiG results in
  half precision into ``model_zoo/checkpoints/`` and registers them in the shipped registry.
* ``tinygg demo [--out DIR]`` starts from the shipped checkpoints: REC in the paper's Table 1 layout beside a
  best-constant-box and a pick-a-random-object baseline, DiG F1 / mean IoU on held-out mixed pairs before and
  after the DiG stage, and every training stage run briefly on fresh data; writes ``report.md``,
  ``metrics.json`` and plots. ``--quick`` is the same in miniature (tests).

Threads: the tiny model's matrices are small, so one intra-op thread per process is fastest, and far faster
on a shared machine (docs/demo_recipe.md has the measurements); ``--threads`` changes it.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

from .fileio import write_json
from .helpformat import HelpFormatter

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "scripts" / "configs" / "demo"
SHIPPED = {"stage3": "tinygg-tiny-stage3", "dig": "tinygg-tiny-dig"}
#: The layout the shipped checkpoints were trained in (question before ``<image>`` or after it): the default demo
#: asks them, and ``--from-scratch`` trains, in this layout unless ``--layout`` says otherwise.
SHIPPED_QUESTION_FIRST = False
LAYOUTS = {"image-first": False, "question-first": True}
#: Patches per LLM token (k x k) of the model the from-scratch plan builds (TinyGGConfig.image_token_merge).
SHIPPED_IMAGE_TOKEN_MERGE = 1
SINGLE_OBJECT = "single object"  # the default demo's extra REC test: scenes of one object
#: The default demo's fresh corpus: the four grounding tasks of the paper (its numbers in the README were measured
#: on these; ``box2attr`` is a recipe experiment, docs/demo_recipe.md section 8).
FRESH_TASKS = ("text2box", "box2text", "object2box", "text2object")
# Camera framing of every demo corpus and pair set (dig.scene.Scene.zoom), the one the shipped checkpoints were
# trained at, and the object counts of the pair sets' scenes (a zoomed frame holds fewer objects).
DEMO_ZOOM = 1.0  # 2.0 was measured (docs/demo_recipe.md, section 9) and is not the shipped plan
PAIR_OBJECTS = (3, 10)
NOMINAL_HOURS = 2.0  # the YAMLs' 14500 SFT + 300 GRPO steps and the evaluations take about this on 2 cores


# ------------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Corpus:
    """One synthetic corpus (arguments of :class:`dig.synth.SynthConfig`)."""

    name: str
    n: int
    min_objects: int
    max_objects: int
    tasks: tuple[str, ...]
    relations: bool
    seed: int
    test_fraction: float = 0.05
    val_fraction: float = 0.0
    turns: int = 1  # questions per conversation (dig.synth.SynthConfig.turns)
    zoom: float = DEMO_ZOOM
    question_first: bool = False  # the question before <image> (dig.synth.SynthConfig.question_first)


@dataclass(frozen=True)
class PairSet:
    """One set of DiG pairs (arguments of :class:`dig.pairs.PairConfig`)."""

    difficulty: str
    n: int
    seed: int
    zoom: float = DEMO_ZOOM
    objects: tuple[int, int] = PAIR_OBJECTS  # scene A's object count, at least and at most


@dataclass(frozen=True)
class SftStage:
    name: str
    config: str  # file name in scripts/configs/demo
    data: tuple[tuple[str, float], ...]  # (training file relative to the run's data dir, mixing ratio)
    overrides: tuple[str, ...] = ()  # key=value settings over the YAML's (e.g. max_steps)


@dataclass
class Plan:
    corpora: list[Corpus]
    pair_sets: dict[str, PairSet]
    sft_pairs: tuple[str, ...]  # pair sets turned into supervised DiG answers for stage 3
    stages: list[SftStage]
    # the DiG stage: supervised phases on pair sets (data "<pair set>_sft.json"), then GRPO (dig_config)
    dig_warmup: tuple[SftStage, ...] = ()
    dig_config: str = "dig.yaml"
    dig_pairs: str = "dig_mixed"
    rec_tests: tuple[str, ...] = ("synth_single", "synth_full")
    dig_test: str = "dig_test"
    eval_limit: int = 300  # REC rows per test file
    rec_prompt: str = "Output the coordinate of <exp>"  # REC questions at evaluation, in the corpora's layout
    steps_scale: float = 1.0
    image_token_merge: int = 1  # the fresh model's patches per LLM token, k x k (TinyGGConfig.image_token_merge)
    extra: dict[str, Any] = field(default_factory=dict)


def rec_prompt(question_first: bool) -> str:
    """The REC question in a layout: ``<image>`` first (the default placement) or after the question."""
    from dig.synth import with_image

    return with_image(Plan.rec_prompt, question_first=True) if question_first else Plan.rec_prompt


def from_scratch_plan(hours: float, question_first: bool = SHIPPED_QUESTION_FIRST,
                      image_token_merge: int = SHIPPED_IMAGE_TOKEN_MERGE) -> Plan:
    """The run that trains the shipped checkpoints (docs/demo_recipe.md says why each choice): single-object
    localisation first (the longest stage), then multi-object attribute REC, then everything with relations and
    the DiG question, each later stage replaying single-object data; the multi-object corpora ask up to four
    questions per image in one conversation.

    ``question_first`` (docs/demo_recipe.md section 15): every corpus asks its question before ``<image>`` and is
    evaluated that way; the multi-object corpora then ask one question per image, since a conversation's later
    questions would come after the image."""
    qf = question_first
    turns = 1 if qf else 4

    def warm_start(name: str, pairs: str, *overrides: str) -> SftStage:  # one cycle of the DiG stage's warm start
        return SftStage(name, "dig_sft.yaml", ((f"{pairs}_sft.json", 1.0), (f"{single}/train.json", 0.15),
                                               (f"{full}/train.json", 0.1)), overrides)

    single, attr, full = ("synth_single_qf", "synth_attr_qf", "synth_full_qf") if qf else (
        "synth_single", "synth_attr_t4", "synth_full_t4")
    return Plan(
        corpora=[
            Corpus(single, 6000, 1, 1, ("object2box", "text2box"), False, seed=1, question_first=qf),
            Corpus(attr, 6000, 2, 4, ("text2box", "object2box", "box2text"), False, seed=2, turns=turns,
                   question_first=qf),
            Corpus(full, 6000, 2, 6, ("text2box", "box2text", "object2box", "text2object"), True, seed=3,
                   turns=turns, question_first=qf),
        ],
        pair_sets={"dig_single": PairSet("single", 1000, 1), "dig_dual": PairSet("dual", 1000, 2),
                   "dig_mixed": PairSet("mixed", 800, 3), "dig_test": PairSet("mixed", 200, 4),
                   # the DiG stage's supervised warm start: one difference among 1-3 objects, where the comparison
                   # forms fastest (docs/demo_recipe.md sections 16-17)
                   "dig_few": PairSet("single", 8000, 5, objects=(1, 3)),
                   "dig_few2": PairSet("single", 8000, 6, objects=(1, 3))},
        sft_pairs=("dig_single", "dig_dual"),
        stages=[
            SftStage("stage1", "stage1.yaml", ((f"{single}/train.json", 1.0),)),
            SftStage("stage2", "stage2.yaml", ((f"{attr}/train.json", 1.0), (f"{single}/train.json", 0.5))),
            SftStage("stage3", "stage3.yaml", ((f"{full}/train.json", 1.0), (f"{attr}/train.json", 0.5),
                                               (f"{single}/train.json", 0.3), ("dig_sft.json", 1.0))),
        ],
        # replaying some REC keeps stage 3's grounding (without it single-object REC fell from 88% to 55%)
        # three cosine cycles: the second repeats the first's pairs (F1 +0.02 on 600 held-out pairs, section 17),
        # the third is on fresh ones (+0.03 more, section 18)
        dig_warmup=(warm_start("dig_sft", "dig_few"), warm_start("dig_sft2", "dig_few", "seed=1"),
                    warm_start("dig_sft3", "dig_few2", "seed=2")),
        rec_tests=(single, attr, full),
        steps_scale=hours / NOMINAL_HOURS,
        rec_prompt=rec_prompt(qf),
        image_token_merge=image_token_merge,
    )


# ------------------------------------------------------------------------------------------------ data
def make_corpus(c: Corpus, out: Path, progress: bool = True) -> Path:
    """Write (or find) one synthetic corpus; its folder is the image root of its samples."""
    from dig.synth import SynthConfig, config_record, generate_synth

    folder = out / c.name
    cfg = SynthConfig(out=folder, n=c.n, min_objects=c.min_objects, max_objects=c.max_objects, zoom=c.zoom,
                      tasks=c.tasks, relations=c.relations, seed=c.seed, val_fraction=c.val_fraction,
                      test_fraction=c.test_fraction, turns=c.turns, question_first=c.question_first)
    info = folder / "synth_info.json"
    if info.exists():  # reuse a finished corpus only if every setting it was made with matches
        made = json.loads(info.read_text())["config"]
        defaults = config_record(SynthConfig(out=folder))  # for fields that older corpora did not record
        if all(made.get(k, defaults[k]) == v for k, v in config_record(cfg).items() if k != "out"):
            return folder
    generate_synth(cfg, progress=progress)
    return folder


def make_pairs(name: str, ps: PairSet, out: Path, progress: bool = True) -> Path:
    """Write (or finish) one set of DiG pairs with the flat renderer; returns its pairs file."""
    from dig.pairs import PAIRS_FILE, PairConfig, generate_pairs

    folder = out / name  # generate_pairs resumes a partial file and returns at once for a finished one
    generate_pairs(PairConfig(out=folder, n=ps.n, difficulty=ps.difficulty, renderer="flat", seed=ps.seed,
                              zoom=ps.zoom, min_objects=ps.objects[0], max_objects=ps.objects[1]), progress=progress)
    return folder / PAIRS_FILE


def split_rec_rows(test_rec: Path, out_dir: Path, limit: int | None = None, split: str | None = None) -> list[str]:
    """The REC test rows in two files, expressions with and without a spatial relation; data specs for
    :func:`tinygg.evaluate.sources.load_rec_data` (split names ``attributes`` / ``relations``), or every row in
    one file when ``split`` names it."""
    from dig.synth import RELATIONS

    rows = [json.loads(line) for line in test_rec.read_text().splitlines() if line.strip()]
    root = test_rec.parent.resolve()
    groups: dict[str, list[dict]] = {split: []} if split else {"attributes": [], "relations": []}
    for r in rows:
        name = split or ("relations" if any(f" {phrase} the " in r["expression"] for phrase in RELATIONS.values())
                         else "attributes")
        groups[name].append(dict(r, img_path=str(root / r["img_path"])))
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = []
    for name, group in groups.items():
        if not group:
            continue
        group = group[:limit] if limit else group
        path = out_dir / f"{name.replace(' ', '_')}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in group))
        specs.append(f"jsonl:{path}:{name}")
    return specs


# ------------------------------------------------------------------------------------------------ baselines
def scene_boxes(corpus_dir: Path, split: str) -> dict[str, list[list[int]]]:
    """Pixel boxes of every visible object per image of one split (re-rendered from ``scenes.jsonl``)."""
    from dig import properties as P
    from dig.masks import mask_box, visible_counts
    from dig.render_flat import render_flat
    from dig.scene import Scene

    info = json.loads((corpus_dir / "synth_info.json").read_text())
    w, h = info["config"]["size"]
    out = {}
    for line in (corpus_dir / "scenes.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["split"] != split:
            continue
        scene = Scene.from_dict(rec["scene"])
        mask = render_flat(scene, w, h).mask
        counts = visible_counts(mask, len(scene))
        out[str((corpus_dir / rec["image"]).resolve())] = [
            [int(v) for v in mask_box(mask, i + 1)] for i in range(len(scene)) if counts[i] >= P.min_visible_pixels(w, h)]
    return out


def best_constant_box(train_boxes: np.ndarray, size: tuple[int, int], grid: int = 16) -> list[float]:
    """The one pixel box that the most training targets overlap with IoU >= 0.5 (a coarse search over
    corners, refined around the best), the strongest answer that ignores the question and the image."""
    from tinygg.boxes import box_iou

    w, h = size
    best, best_hits = None, -1

    def search(xs: np.ndarray, ys: np.ndarray) -> None:
        nonlocal best, best_hits
        cand = np.array([[x1, y1, x2, y2] for x1 in xs for x2 in xs if x2 > x1 for y1 in ys for y2 in ys if y2 > y1],
                        dtype=float)
        hits = (box_iou(cand, train_boxes) >= 0.5).sum(axis=1)
        k = int(hits.argmax())
        if hits[k] > best_hits:
            best, best_hits = cand[k].tolist(), int(hits[k])

    search(np.linspace(0, w, grid + 1), np.linspace(0, h, grid + 1))
    x1, y1, x2, y2 = best
    dx, dy = w / grid, h / grid
    search(np.linspace(x1 - dx, x2 + dx, grid + 1).clip(0, w), np.linspace(y1 - dy, y2 + dy, grid + 1).clip(0, h))
    return [float(v) for v in best]


def rec_row_accuracies(metrics: dict[str, Any]) -> dict[str, float]:
    """Acc@0.5 per split of an ``evaluate_rec`` result, plus ``all`` (every row counted once)."""
    splits = metrics["splits"]
    n = sum(v["n"] for v in splits.values())
    return {k: v["acc"] for k, v in splits.items()} | {"all": sum(v["hits"] for v in splits.values()) / n if n else None}


def baseline_hits(samples: Sequence[Any], predict) -> list[bool]:
    """Per REC sample: does the baseline's pixel box reach IoU >= 0.5 with the ground truth?"""
    from tinygg.boxes import box_iou

    return [bool(box_iou(np.array([predict(s)], float), np.array([s.bbox], float))[0, 0] >= 0.5) for s in samples]


def accuracy_by_split(samples: Sequence[Any], hits: Sequence[bool]) -> dict[str, float | None]:
    """Acc@0.5 per split and over all rows from per-sample hits."""
    out: dict[str, float | None] = {}
    for sp in sorted({s.split for s in samples}):
        h = [x for s, x in zip(samples, hits) if s.split == sp]
        out[sp] = float(np.mean(h))
    out["all"] = float(np.mean(hits)) if len(hits) else None
    return out


# ------------------------------------------------------------------------------------------------ stages
def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


class WallClock:
    """Seconds spent in a resumable step, summed over sessions: ``path`` (JSON ``{"seconds": ...}``) is
    rewritten every ``every`` seconds, so a killed session loses at most that much of the count."""

    def __init__(self, path: Path, every: float = 30.0) -> None:
        self.path, self.every = path, every
        self.before = json.loads(path.read_text())["seconds"] if path.exists() else 0.0
        self._stop = threading.Event()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"seconds": self.before + time.time() - self.t0})

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._write()

    def __enter__(self) -> Self:
        self.t0 = time.time()
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._write()


def run_sft_stage(stage: SftStage, init: str, data_dir: Path, out_dir: Path, steps_scale: float = 1.0,
                  overrides: Sequence[str] = ()) -> Path:
    """One supervised stage from its demo YAML; skipped when ``out_dir/final`` exists (resumes otherwise)."""
    from tinygg.data.dataset import DataSource
    from tinygg.train.config import load_config
    from tinygg.train.trainer import run

    final = out_dir / "final"
    if (final / "model.safetensors").exists():
        logger.info("%s: finished earlier (%s); skipped", stage.name, final)
        return final
    cfg = load_config(CONFIG_DIR / stage.config, [f"init={init}", f"output_dir={out_dir}", *overrides])
    cfg.data = [DataSource(path=str(data_dir / p), ratio=r) for p, r in stage.data]
    if steps_scale != 1.0 and cfg.max_steps > 0:
        cfg.max_steps = max(1, round(cfg.max_steps * steps_scale))
    with WallClock(out_dir / "wall_time.json"):
        return run(cfg)


def run_dig_stage(init: str, pairs: Path, out_dir: Path, config: str = "dig.yaml", steps_scale: float = 1.0,
                  overrides: Sequence[str] = ()) -> Path:
    from dig.grpo import load_stage_config, run_stage

    cfg = load_stage_config(CONFIG_DIR / config, [f"init={init}", f"pairs={pairs}", f"output_dir={out_dir}",
                                                  *overrides])
    if steps_scale != 1.0 and cfg.max_steps > 0:
        cfg.max_steps = max(1, round(cfg.max_steps * steps_scale))
    with WallClock(out_dir / "wall_time.json"):
        return run_stage(cfg, name="dig")


def eval_rec(model_dir: Path, specs: list[str], out_dir: Path, vis: int = 0,
             prompt: str = Plan.rec_prompt) -> dict[str, Any]:
    """Acc@0.5 of a checkpoint on the REC test files, asked with ``prompt`` (resumes from ``out_dir``)."""
    from tinygg.evaluate.rec import evaluate_rec
    from tinygg.evaluate.sources import load_rec_data
    from tinygg.inference import load_model

    samples, problems = load_rec_data(specs)
    model, processor = load_model(model_dir, dtype=__import__("torch").float32, device="cpu")
    return evaluate_rec(model, processor, samples, out_dir, prompt=prompt, batch_size=16, vis=vis,
                        problems=problems, settings={"model": str(model_dir), "data": specs}, progress=True)


def eval_dig(model_dir: Path, pairs_file: Path, out_dir: Path, vis: int = 0) -> dict[str, Any]:
    """DiG F1 / mean IoU of a checkpoint on held-out pairs (cached in ``out_dir/metrics.json``)."""
    from dig.evaluate import draw_overlay, score_predictions
    from dig.pairs import read_pairs
    from dig.predict import answer_pairs
    from tinygg.inference import load_model

    done = out_dir / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    records = read_pairs(pairs_file)
    model, processor = load_model(model_dir, dtype=__import__("torch").float32, device="cpu")
    texts = answer_pairs(model, processor, records, "norm", batch_size=8, progress=True)
    result = score_predictions(records, texts)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result.pop("per_sample", [])
    with (out_dir / "predictions.jsonl").open("w") as f:
        for r, t, row in zip(records, texts, rows or [{}] * len(records)):
            f.write(json.dumps({"id": r["id"], "answer": t, **row}) + "\n")
    for r, row in list(zip(records, rows))[:vis]:
        draw_overlay(r, row, out_dir / "vis" / f"{r['id']}.png")
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


# ------------------------------------------------------------------------------------------------ from scratch
def from_scratch(out: Path, plan: Plan, ship_to: tuple[Path, Path] | None = None, progress: bool = True,
                 stage3_from: Path | None = None) -> dict[str, Any]:
    """The long run; resumable. Returns the summary written to ``out/metrics.json``. ``ship_to`` =
    (checkpoint folder, registry file) receives the half-precision results (see :func:`ship_checkpoints`).

    ``stage3_from``: stages 1-3 are not trained; the DiG stage starts from this checkpoint (evaluated as the
    stage-3 row), and only the DiG result is shipped."""
    from dig.pairs import pairs_to_samples

    hours = plan.steps_scale * NOMINAL_HOURS
    data = out / "data"
    total = WallClock(out / "wall_time_total.json").__enter__()  # data, training and evaluation, all sessions
    for c in plan.corpora:
        make_corpus(c, data, progress)
    specs = {t: split_rec_rows(data / t / "test_rec.jsonl", out / "eval" / "rec_data" / t, plan.eval_limit)
             for t in plan.rec_tests}

    summary: dict[str, Any] = {"mode": "from-scratch", "hours_budget": hours, "rec_prompt": plan.rec_prompt,
                               "image_token_merge": plan.image_token_merge, "stages": {}}

    @functools.cache
    def pair_files() -> dict[str, Path]:  # every pair set, made when first needed
        return {k: make_pairs(k, ps, data, progress) for k, ps in plan.pair_sets.items()}

    def need_pairs(stage: SftStage) -> None:  # the supervised samples of the pair sets a stage trains on
        wanted = [p for p, _ in stage.data if p == "dig_sft.json" or p.removesuffix("_sft.json") in plan.pair_sets]
        for p in wanted:
            if (data / p).exists():
                continue
            if p == "dig_sft.json":  # stage 3's DiG answers: the plan's sft_pairs, shuffled together
                merged = []
                for name in plan.sft_pairs:
                    merged += json.loads(pairs_to_samples(pair_files()[name], data / f"{name}_sft.json").read_text())
                random.Random(0).shuffle(merged)
                write_json(data / p, merged)
            else:
                pairs_to_samples(pair_files()[p.removesuffix("_sft.json")], data / p)

    def rec(model: Path, name: str, vis: int = 0) -> dict[str, dict[str, float | None]]:
        return {t: rec_row_accuracies(eval_rec(model, sp, out / "eval" / name / f"rec_{t}", vis=vis,
                                               prompt=plan.rec_prompt)) for t, sp in specs.items()}

    if stage3_from is None:
        init = "preset:tiny"
        for stage in plan.stages:
            need_pairs(stage)
            built = (f"init_image_token_merge={plan.image_token_merge}",) if init.startswith("preset:") else ()
            final = run_sft_stage(stage, init, data, out / stage.name, plan.steps_scale, built + stage.overrides)
            summary["stages"][stage.name] = {"checkpoint": str(final), "rec": rec(final, stage.name, vis=8)}
            init = str(final)
        stage3 = Path(init)
    else:
        stage3 = Path(stage3_from)
        summary["stage3_from"] = str(stage3)
        summary["stages"]["stage3"] = {"checkpoint": str(stage3), "rec": rec(stage3, "stage3", vis=8)}
    pairs = pair_files()
    dig_eval = {"stage3": eval_dig(stage3, pairs[plan.dig_test], out / "eval" / "stage3" / "dig", vis=8)}
    init = str(stage3)
    for phase in plan.dig_warmup:  # the DiG stage's supervised warm start
        need_pairs(phase)
        init = str(run_sft_stage(phase, init, data, out / phase.name, plan.steps_scale, phase.overrides))
        dig_eval[phase.name] = eval_dig(Path(init), pairs[plan.dig_test], out / "eval" / phase.name / "dig")
    dig_final = run_dig_stage(init, pairs[plan.dig_pairs], out / "dig", plan.dig_config, plan.steps_scale)
    dig_eval["dig"] = eval_dig(dig_final, pairs[plan.dig_test], out / "eval" / "dig" / "dig", vis=8)
    summary["stages"]["dig"] = {"checkpoint": str(dig_final), "rec": rec(dig_final, "dig")}
    summary["dig"] = {"before": dig_eval["stage3"]["overall"], "after": dig_eval["dig"]["overall"],
                      "by_step": {k: v["overall"] for k, v in dig_eval.items()}}
    total.__exit__()
    summary["wall_time_total_s"] = json.loads((out / "wall_time_total.json").read_text())["seconds"]
    names = [s.name for s in plan.stages] + [s.name for s in plan.dig_warmup] + ["dig"]
    summary["stage_wall_times_s"] = {name: json.loads((out / name / "wall_time.json").read_text())["seconds"]
                                     for name in names if (out / name / "wall_time.json").exists()}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(from_scratch_report(summary))
    if ship_to:
        ship_checkpoints(None if stage3_from else stage3, dig_final, out, *ship_to,
                         rec_specs=specs[plan.rec_tests[-1]], rec_prompt=plan.rec_prompt)
    return summary


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _merge_words(k: int) -> str:
    return f" (one LLM token per {k} x {k} patches)" if k > 1 else ""


def from_scratch_report(s: dict[str, Any]) -> str:
    lines = ["# tinygg demo --from-scratch", "",
             (f"Tiny preset from random init{_merge_words(s.get('image_token_merge', 1))}; budget "
              f"{s['hours_budget']} h."), "",
             "| stage | test | split | Acc@0.5 |", "|---|---|---|---|"]
    for name, e in s["stages"].items():
        for t, accs in e["rec"].items():
            for split, acc in accs.items():
                lines.append(f"| {name} | {t} | {split} | {'-' if acc is None else f'{100 * acc:.1f}'} |")
    if s.get("stage3_from"):
        lines[2] += f" Stages 1-3 were not run here: the DiG stage starts from `{s['stage3_from']}`."
    if "dig" in s:
        steps = s["dig"].get("by_step") or {"stage3": s["dig"]["before"], "dig": s["dig"]["after"]}
        labels = {"stage3": "stage 3", "dig": "after DiG (GRPO)"}
        lines += ["", "| DiG (held-out mixed pairs) | F1 | precision | recall | mean IoU |", "|---|---|---|---|---|"]
        lines += [f"| {labels.get(k, k + ' (supervised)')} | {_num(r['f1'])} | {_num(r.get('precision'))} | "
                  f"{_num(r.get('recall'))} | {_num(r['mean_iou'])} |" for k, r in steps.items()]
    times = ", ".join(f"{k} {v / 60:.0f} min" for k, v in s.get("stage_wall_times_s", {}).items())
    lines += ["", (f"Wall time, all sessions: {s['wall_time_total_s'] / 3600:.2f} h in total (data, training and "
                  f"evaluation); training per stage: {times}."), ""]
    return "\n".join(lines)


def shipped_location() -> tuple[Path, Path]:
    """Where shipped checkpoints live: ``model_zoo/checkpoints/`` and the registry shipped with the package."""
    from model_zoo.registry import PACKAGE_DIR, SHIPPED_REGISTRY

    return PACKAGE_DIR / "checkpoints", SHIPPED_REGISTRY


def ship_checkpoints(stage3: Path | None, dig_final: Path, run_dir: Path, dest_root: Path, registry: Path,
                     rec_specs: list[str] | None = None, rec_prompt: str = Plan.rec_prompt) -> None:
    """Half-precision copies of both results (only the DiG one when ``stage3`` is None) under ``dest_root``,
    registered in ``registry`` (inside the model_zoo package they are recorded as ``package://`` paths). The
    copies themselves are evaluated on ``rec_specs`` (the run's REC test rows), so the numbers on their cards
    are the shipped weights' own."""
    import torch

    from model_zoo.add_checkpoint import add
    from tinygg.inference import load_model

    results = ([("stage3", stage3)] if stage3 is not None else []) + [("dig", dig_final)]
    for stage, src in results:
        name = SHIPPED[stage]
        dest = dest_root / name
        model, processor = load_model(src, dtype=torch.float32, device="cpu")
        if dest.exists():
            shutil.rmtree(dest)
        model.to(torch.float16).save_pretrained(dest, safe_serialization=True)
        processor.save_pretrained(dest)
        shutil.copy(run_dir / "report.md", dest / "demo_report.md")
        evals = []
        if rec_specs:
            shipped_eval = run_dir / "eval" / f"shipped_{stage}"
            shutil.rmtree(shipped_eval, ignore_errors=True)
            eval_rec(dest, rec_specs, shipped_eval, prompt=rec_prompt)
            evals = [shipped_eval / "metrics.json"]
        add(name, from_dir=dest, preset="tiny", stage=stage, registry_path=registry, overwrite=True,
            parent=SHIPPED["stage3"] if stage == "dig" else None, license="apache-2.0", eval_json=evals,
            description=f"The tiny preset trained from random init on synthetic CLEVR-style data by "
                        f"`tinygg demo --from-scratch` ({stage}); half precision. Report: demo_report.md.")


# ------------------------------------------------------------------------------------------------ default demo
@dataclass(frozen=True)
class DemoSize:
    scenes: int
    dig_pairs: int
    train_steps: int
    grpo_steps: int
    rec_limit: int


SIZES = {"quick": DemoSize(scenes=16, dig_pairs=4, train_steps=2, grpo_steps=1, rec_limit=12),
         "default": DemoSize(scenes=300, dig_pairs=200, train_steps=40, grpo_steps=8, rec_limit=200)}


def default_demo(out: Path, stage3: str, dig_model: str, size: DemoSize, progress: bool = True,
                 question_first: bool = SHIPPED_QUESTION_FIRST) -> dict[str, Any]:
    """Evaluate two checkpoints trained in the ``question_first`` layout and run every stage briefly (module doc)."""
    from dig.pairs import pairs_to_samples
    from tinygg.evaluate.sources import load_rec_data
    from tinygg.inference import resolve_model_path

    t0 = time.time()
    try:
        stage3_dir, dig_dir = resolve_model_path(stage3), resolve_model_path(dig_model)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"tinygg demo: {e}\nThe default demo starts from the shipped tiny checkpoints; train them "
                         f"with `tinygg demo --from-scratch --ship` or pass --stage3 DIR --dig DIR.") from None
    data = out / "data"
    qf, prompt = question_first, rec_prompt(question_first)
    corpus = make_corpus(Corpus("fresh", size.scenes, 2, 6, FRESH_TASKS, True, seed=1001, test_fraction=0.6,
                                question_first=qf), data, progress)
    specs = split_rec_rows(corpus / "test_rec.jsonl", out / "rec_data", size.rec_limit)
    single = make_corpus(Corpus("fresh_single", size.scenes, 1, 1, ("text2box",), False, seed=1003,
                                test_fraction=0.6, question_first=qf), data, progress)
    single_specs = split_rec_rows(single / "test_rec.jsonl", out / "rec_data", size.rec_limit, split=SINGLE_OBJECT)
    test_pairs = make_pairs("dig_test", PairSet("mixed", size.dig_pairs, 1001), data, progress)
    train_pairs = make_pairs("dig_train", PairSet("single", max(2, size.dig_pairs // 2), 1002), data, progress)
    pairs_to_samples(train_pairs, data / "dig_sft.json")

    metrics: dict[str, Any] = {"mode": "default", "models": {"stage3": str(stage3_dir), "dig": str(dig_dir)},
                               "rec_prompt": prompt}
    # --- REC: the two shipped models and the two baselines
    rec = {"stage3": eval_rec(stage3_dir, specs, out / "rec" / "stage3", vis=6, prompt=prompt),
           "dig": eval_rec(dig_dir, specs, out / "rec" / "dig", prompt=prompt)}
    rec_single = {"stage3": eval_rec(stage3_dir, single_specs, out / "rec_single" / "stage3", vis=4, prompt=prompt),
                  "dig": eval_rec(dig_dir, single_specs, out / "rec_single" / "dig", prompt=prompt)}
    samples, _ = load_rec_data(specs)
    single_samples, _ = load_rec_data(single_specs)
    info = json.loads((corpus / "synth_info.json").read_text())
    size_wh = tuple(info["config"]["size"])
    train_boxes = np.array([box for boxes in scene_boxes(corpus, "train").values() for box in boxes], float)
    const = best_constant_box(train_boxes, size_wh) if len(train_boxes) else [0, 0, size_wh[0], size_wh[1]]
    objects = scene_boxes(corpus, "test") | scene_boxes(single, "test")
    rng = random.Random(0)
    base = {"constant box": lambda s: const,
            "random object": lambda s: rng.choice(objects.get(str(Path(s.image_path).resolve()), [const]))}
    table: dict[str, dict[str, float | None]] = {}
    for label, fn in base.items():
        table[label] = accuracy_by_split(samples, baseline_hits(samples, fn))
        single_hits = baseline_hits(single_samples, fn)
        table[label][SINGLE_OBJECT] = accuracy_by_split(single_samples, single_hits)[SINGLE_OBJECT]
    for label, m in rec.items():
        table[f"TinyGG tiny ({label})"] = rec_row_accuracies(m) | {
            SINGLE_OBJECT: rec_row_accuracies(rec_single[label])[SINGLE_OBJECT]}
    every = samples + single_samples
    metrics["rec"] = {"table": table, "constant_box": const, "n": {sp: sum(s.split == sp for s in every)
                                                                    for sp in sorted({s.split for s in every})}}
    # --- DiG before / after
    before = eval_dig(stage3_dir, test_pairs, out / "dig_eval" / "before", vis=4)
    after = eval_dig(dig_dir, test_pairs, out / "dig_eval" / "after", vis=4)
    metrics["dig"] = {"before": before["overall"], "after": after["overall"],
                      "by_difficulty_after": after.get("by_difficulty")}
    # --- every stage, briefly, on the fresh data
    plan = [SftStage("stage1", "stage1.yaml", (("fresh/train.json", 1.0),)),
            SftStage("stage2", "stage2.yaml", (("fresh/train.json", 1.0),)),
            SftStage("stage3", "stage3.yaml", (("fresh/train.json", 1.0), ("dig_sft.json", 1.0))),
            SftStage("dig_sft", "dig_sft.yaml", (("dig_sft.json", 1.0),))]  # the DiG stage's warm start
    init, curves = str(stage3_dir), {}
    for st in plan:
        final = run_sft_stage(st, init, data, out / "train" / st.name,
                              overrides=[f"max_steps={size.train_steps}", "logging_steps=1", "save_steps=100000"])
        curves[st.name] = _losses(out / "train" / st.name / "log_history.jsonl", "loss")
        init = str(final)
    run_dig_stage(init, train_pairs.parent, out / "train" / "dig",
                  overrides=[f"max_steps={size.grpo_steps}", "logging_steps=1", "save_steps=100000"])
    curves["dig reward"] = _losses(out / "train" / "dig" / "log_history.jsonl", "reward")
    metrics["brief_training"] = {k: {"first": v[0][1] if v else None, "last": v[-1][1] if v else None,
                                     "steps": len(v)} for k, v in curves.items()}
    _plot_curves(curves, out / "curves.png")
    metrics["wall_time_s"] = time.time() - t0
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(default_report(metrics, out))
    return metrics


def _losses(path: Path, key: str) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [(int(r["step"]), float(r[key])) for r in rows if key in r and "step" in r]


def _plot_curves(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 3), dpi=100, squeeze=False)
    for ax, (name, pts) in zip(axes[0], curves.items()):
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=1)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def default_report(m: dict[str, Any], out: Path) -> str:
    table = m["rec"]["table"]
    split_cols = sorted({k for row in table.values() for k in row if k not in ("all", SINGLE_OBJECT)})
    cols = split_cols + ["all"] + ([SINGLE_OBJECT] if any(SINGLE_OBJECT in row for row in table.values()) else [])

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}"

    width = max(len(k) for k in table)
    cw = {c: max(10, len(c)) for c in cols}
    header = [f"{'Model':<{width}} | " + " | ".join(f"{c:>{cw[c]}}" for c in cols),
              "-" * width + "-+-" + "-+-".join("-" * cw[c] for c in cols)]
    body = [f"{label:<{width}} | " + " | ".join(f"{pct(row.get(c)):>{cw[c]}}" for c in cols)
            for label, row in table.items()]
    b, a = m["dig"]["before"], m["dig"]["after"]
    lines = ["# tinygg demo", "", f"Models: stage 3 `{m['models']['stage3']}`, DiG `{m['models']['dig']}`.", "",
             "## REC (paper Table 1 layout, held-out synthetic scenes)", "", "```", *header, *body, "```", "",
             (f"Scenes of 2-6 objects; `all` counts their rows, `{SINGLE_OBJECT}` is a separate test of scenes with "
              "one object (finding it is the whole task, so the random object is the target there)."),
             f"Rows per split: {m['rec']['n']}. Constant box (fit on the training scenes): {m['rec']['constant_box']}.",
             "", "## DiG (held-out mixed pairs)", "", "| model | F1 | precision | recall | mean IoU |",
             "|---|---|---|---|---|"]
    for label, r in (("stage 3 (before DiG)", b), ("after DiG", a)):
        lines.append(f"| {label} | {_num(r['f1'])} | {_num(r['precision'])} | {_num(r['recall'])} | "
                     f"{_num(r['mean_iou'])} |")
    lines += ["", "## Every stage, briefly, on fresh data", "", "| stage | steps | first | last |", "|---|---|---|---|"]
    for k, v in m["brief_training"].items():
        lines.append(f"| {k} | {v['steps']} | {v['first']} | {v['last']} |")
    lines += ["", "![curves](curves.png)", "", ("Boxes on test images: `rec/stage3/vis/`; DiG before/after: "
              "`dig_eval/before/vis/`, `dig_eval/after/vis/`."), "", f"Wall time: {m['wall_time_s']:.0f} s.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="the whole method on synthetic data, on a CPU",
        description="Default: evaluate the shipped tiny checkpoints (REC with baselines, DiG before/after) and "
                    "run every training stage briefly on fresh data; writes report.md, metrics.json, plots. "
                    "--from-scratch trains those checkpoints from random init (hours; resumable).",
        formatter_class=HelpFormatter)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder, a rerun resumes there (default: runs/demo; runs/demo-from-scratch with "
                        "--from-scratch)")
    p.add_argument("--quick", action="store_true", help="a miniature run (tests; under 2 minutes)")
    p.add_argument("--from-scratch", action="store_true", help="train the tiny checkpoints from random init")
    p.add_argument("--hours", type=float, default=NOMINAL_HOURS, metavar="H",
                   help="--from-scratch: budget in hours; scales every stage's max_steps (the YAMLs' step counts "
                        "are sized for 2 h on 2 CPU cores)")
    shipped_layout = next(k for k, v in LAYOUTS.items() if v == SHIPPED_QUESTION_FIRST)
    p.add_argument("--layout", choices=list(LAYOUTS), default=shipped_layout,
                   help="where <image> goes in every question: first, or after the question (the image tokens then "
                        "see it; docs/demo_recipe.md sections 14-15). --from-scratch trains in it; the default demo "
                        "asks the models in it and trains them briefly in it. The default is the shipped "
                        "checkpoints' layout")
    p.add_argument("--image-token-merge", type=int, default=SHIPPED_IMAGE_TOKEN_MERGE, metavar="K",
                   help="--from-scratch: the fresh model gives the LLM one token per K x K patches (K*K times "
                        "fewer image tokens; docs/demo_recipe.md section 19). The default is the shipped "
                        "checkpoints'")
    p.add_argument("--dig-from", default=None, metavar="MODEL",
                   help="--from-scratch: skip stages 1-3 and run only the DiG stage (supervised warm start, then "
                        "GRPO) from this stage-3 checkpoint (dir or zoo name); with --ship only the DiG result "
                        "is replaced")
    p.add_argument("--ship", action="store_true",
                   help="--from-scratch: copy the results (fp16) into model_zoo/checkpoints and register them")
    p.add_argument("--stage3", default=SHIPPED["stage3"], metavar="MODEL", help="stage-3 checkpoint (dir or zoo name)")
    p.add_argument("--dig", default=SHIPPED["dig"], metavar="MODEL", help="DiG checkpoint (dir or zoo name)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="torch intra-op threads (1 is fastest for tiny)")
    p.set_defaults(func=_handler)


def _handler(args: argparse.Namespace) -> int:
    _threads(args.threads)
    out = Path(args.out or ("runs/demo-from-scratch" if args.from_scratch else "runs/demo"))
    out.mkdir(parents=True, exist_ok=True)
    if args.from_scratch:
        if args.ship and LAYOUTS[args.layout] != SHIPPED_QUESTION_FIRST:
            raise SystemExit(f"tinygg demo: --ship with --layout {args.layout}: the default demo asks the shipped "
                             "checkpoints in their layout, tinygg.demo.SHIPPED_QUESTION_FIRST; set it first")
        if args.ship and args.image_token_merge != SHIPPED_IMAGE_TOKEN_MERGE:
            raise SystemExit(f"tinygg demo: --ship with --image-token-merge {args.image_token_merge}: the shipped "
                             "plan builds tinygg.demo.SHIPPED_IMAGE_TOKEN_MERGE; set it first")
        plan = from_scratch_plan(args.hours, LAYOUTS[args.layout], args.image_token_merge)
        stage3_from = None
        if args.dig_from:
            from tinygg.inference import resolve_model_path

            stage3_from = resolve_model_path(args.dig_from)
        s = from_scratch(out, plan, ship_to=shipped_location() if args.ship else None, stage3_from=stage3_from)
        print((out / "report.md").read_text())
        print(f"metrics -> {out / 'metrics.json'}")
        return 0 if s else 1
    default_demo(out, args.stage3, args.dig, SIZES["quick" if args.quick else "default"],
                 question_first=LAYOUTS[args.layout])
    print((out / "report.md").read_text())
    print(f"report -> {out / 'report.md'}")
    return 0
