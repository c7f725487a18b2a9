"""DiG pair datasets: plan pairs of CLEVR scenes with K differences, render them (flat or Blender), read
tight boxes from the instance masks, and write ``pairs.jsonl`` + images, resumably and by shard.

Python API (the CLI is a thin wrapper)::

    from dig.pairs import PairConfig, generate_pairs
    generate_pairs(PairConfig(out="runs/dig/single", n=1600, difficulty="single", renderer="flat"))

Record (one JSON line per pair, paths relative to the file's directory)::

    {"id", "image_a", "image_b", "boxes": [[x1,y1,x2,y2] pixels], "changes": [{"kind", "object", "before",
     "after"}], "difficulty", "num_differences", "width", "height", "renderer", "scene_a", "scene_b"}

``boxes[i]`` belongs to ``changes[i]``: a deleted object's mask box in image A, an added one's in image B,
the union of both for attribute changes. Each pair depends only on (seed, difficulty, index), so shards,
worker counts and restarts do not change the data; a finished file is sorted by index, so a resumed run
ends byte-identical to an uninterrupted one. ``pairs.settings.json`` beside the file records the settings that
decide a pair's content (seed, size, zoom, object counts, ...); a restart with other settings is refused.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from dig import properties as P
from dig.masks import mask_box, union_box, visible_counts
from dig.render_flat import render_flat, render_mask
from dig.scene import EDIT_KINDS, Change, Scene, check_object_counts, check_zoom, edit_scene, sample_scene
from tinygg.fileio import write_json, write_jsonl

logger = logging.getLogger(__name__)

DIFFICULTIES: tuple[str, ...] = ("single", "dual", "mixed")
CURRICULUM: tuple[str, ...] = DIFFICULTIES  # the paper's order: single -> dual -> mixed
CURRICULUM_PAIRS = 1600  # pairs per curriculum set (the paper's 1.6K)
RENDERERS: tuple[str, ...] = ("flat", "blender")
PAIRS_FILE = "pairs.jsonl"
MAX_PLAN_ATTEMPTS = 200
MAX_RENDER_REJECTS = 5  # Blender renders of one pair whose masks fail the checks before it is skipped


@dataclass
class PairConfig:
    """Settings of one generation run (one difficulty, or ``curriculum`` for all three)."""

    out: str | Path
    n: int = CURRICULUM_PAIRS
    difficulty: str = "single"  # single | dual | mixed | curriculum
    renderer: str = "flat"  # flat | blender
    workers: int = 1
    size: tuple[int, int] | None = None  # (W, H); default DEMO_SIZE for flat, CLEVR_SIZE for blender
    samples: int = 32  # Cycles samples (blender only)
    denoise: bool = True  # OpenImageDenoise after Cycles (blender only; off = bit-exact reruns)
    shard: tuple[int, int] = (0, 1)  # (i, n): this run makes the pairs whose index % n == i
    zero_diff_fraction: float = 0.0  # share of pairs with no difference (answer [])
    seed: int = 0
    max_differences: int = 4  # mixed: K ~ U{1..max_differences}
    min_objects: int = P.MIN_OBJECTS
    max_objects: int = P.MAX_OBJECTS
    zoom: float = 1.0  # camera framing (dig.scene.Scene): 2 shows objects twice as large
    kinds: tuple[str, ...] = EDIT_KINDS
    max_visibility_change: float = 0.2  # an unchanged object may gain/lose at most this share of pixels
    min_pixels: int | None = None  # default: CLEVR's 200 px at 320x240, scaled to the size
    save_masks: bool = False  # also write masks/<id>_a.png, _b.png (uint8 instance indices)
    retries: int = 2  # Blender: re-renders of a pair after a worker crash
    blender_threads: int | None = None  # Cycles threads per worker (default: cores // workers)

    def __post_init__(self) -> None:
        if self.difficulty not in DIFFICULTIES + ("curriculum",):
            raise ValueError(f"--difficulty: expected one of {list(DIFFICULTIES) + ['curriculum']}, "
                             f"got {self.difficulty!r}")
        if self.renderer not in RENDERERS:
            raise ValueError(f"--renderer: expected one of {list(RENDERERS)}, got {self.renderer!r}")
        if self.n < 0:
            raise ValueError(f"--n: expected >= 0 pairs, got {self.n}")
        if self.workers < 1:
            raise ValueError(f"--workers: expected >= 1, got {self.workers}")
        i, k = self.shard
        if not (k >= 1 and 0 <= i < k):
            raise ValueError(f"--shard: expected i/n with 0 <= i < n, got {i}/{k}")
        if not 0.0 <= self.zero_diff_fraction <= 1.0:
            raise ValueError(f"--zero-diff-fraction: expected a value in [0, 1], got {self.zero_diff_fraction}")
        if self.size is None:
            self.size = P.DEMO_SIZE if self.renderer == "flat" else P.CLEVR_SIZE
        w, h = self.size
        if w < 8 or h < 8:
            raise ValueError(f"--size: expected at least 8x8 pixels, got {w}x{h}")
        if self.samples < 1:
            raise ValueError(f"--samples: expected >= 1, got {self.samples}")
        check_object_counts(self.min_objects, self.max_objects)
        check_zoom(self.zoom, "--zoom")
        if not 1 <= self.max_differences:
            raise ValueError(f"max_differences must be >= 1, got {self.max_differences}")

    @property
    def width(self) -> int:
        return self.size[0]  # type: ignore[index]

    @property
    def height(self) -> int:
        return self.size[1]  # type: ignore[index]

    @property
    def visible_threshold(self) -> int:
        return self.min_pixels if self.min_pixels is not None else P.min_visible_pixels(self.width, self.height)


@dataclass
class PairPlan:
    """Two scenes and their changes, checked for visibility with the flat renderer's masks."""

    pair_id: str
    index: int
    difficulty: str
    attempt: int
    scene_a: Scene
    scene_b: Scene
    changes: list[Change]


# ------------------------------------------------------------------------------------------- planning


def pair_id(difficulty: str, index: int) -> str:
    return f"{difficulty}_{index:06d}"


def pair_rng(seed: int, difficulty: str, index: int, attempt: int) -> np.random.Generator:
    """The one random stream of a pair's attempt: a function of (seed, difficulty, index, attempt)."""
    return np.random.default_rng([seed, zlib.crc32(difficulty.encode()), index, attempt])


def number_of_differences(cfg: PairConfig, difficulty: str, rng: np.random.Generator) -> int:
    if cfg.zero_diff_fraction > 0 and rng.random() < cfg.zero_diff_fraction:
        return 0
    if difficulty == "single":
        return 1
    if difficulty == "dual":
        return 2
    return int(rng.integers(1, cfg.max_differences + 1))


def check_masks(plan: PairPlan, mask_a: np.ndarray, mask_b: np.ndarray, cfg: PairConfig) -> str | None:
    """Why a rendered pair must be dropped (None if it is fine): an object under the visibility threshold
    in either image (CLEVR's rule; covers every changed object), or an unchanged object whose visible area
    changed by more than ``max_visibility_change`` (an edit must not hide or reveal other objects)."""
    thr = cfg.visible_threshold
    counts_a = visible_counts(mask_a, len(plan.scene_a))
    counts_b = visible_counts(mask_b, len(plan.scene_b))
    for scene, counts, name in ((plan.scene_a, counts_a, "A"), (plan.scene_b, counts_b, "B")):
        low = [o.id for o, c in zip(scene.objects, counts) if c < thr]
        if low:
            return f"objects {low} have < {thr} visible pixels in image {name}"
    changed = {c.object for c in plan.changes}
    for i, obj in enumerate(plan.scene_a.objects):
        if obj.id in changed:
            continue
        before, after = counts_a[i], counts_b[plan.scene_b.index_of(obj.id)]
        if abs(int(after) - int(before)) > cfg.max_visibility_change * before:
            return f"unchanged object {obj.id} went from {before} to {after} visible pixels"
    return None


def plan_pair(cfg: PairConfig, difficulty: str, index: int, first_attempt: int = 0) -> PairPlan:
    """Sample scene A, edit it into scene B, and keep the first attempt that passes :func:`check_masks`
    on the flat renderer's masks (the Blender path checks its own masks again after rendering)."""
    for attempt in range(first_attempt, first_attempt + MAX_PLAN_ATTEMPTS):
        rng = pair_rng(cfg.seed, difficulty, index, attempt)
        k = number_of_differences(cfg, difficulty, rng)
        try:  # a crowded draw (many objects in a zoomed frame) can fail; it is one failed attempt
            scene_a = sample_scene(rng, min_objects=cfg.min_objects, max_objects=cfg.max_objects, zoom=cfg.zoom)
            scene_b, changes = edit_scene(scene_a, k, rng, kinds=cfg.kinds, max_objects=cfg.max_objects)
        except RuntimeError:
            continue
        plan = PairPlan(pair_id(difficulty, index), index, difficulty, attempt, scene_a, scene_b, changes)
        reason = check_masks(plan, render_mask(scene_a, cfg.width, cfg.height),
                             render_mask(scene_b, cfg.width, cfg.height), cfg)
        if reason is None:
            return plan
    raise RuntimeError(f"pair {pair_id(difficulty, index)}: no valid scene pair in {MAX_PLAN_ATTEMPTS} attempts "
                       f"at {cfg.width}x{cfg.height} (try fewer objects or a larger --size)")


def change_boxes(plan: PairPlan, mask_a: np.ndarray, mask_b: np.ndarray) -> list[list[int]]:
    """One pixel box per change, from the masks (see the module docstring)."""
    boxes = []
    for ch in plan.changes:
        box_a = mask_box(mask_a, plan.scene_a.index_of(ch.object) + 1) if ch.kind != "add" else None
        box_b = mask_box(mask_b, plan.scene_b.index_of(ch.object) + 1) if ch.kind != "delete" else None
        box = union_box(box_a, box_b)
        if box is None:
            raise RuntimeError(f"pair {plan.pair_id}: changed object {ch.object} is visible in neither image")
        boxes.append(box)
    return boxes


def make_record(plan: PairPlan, boxes: list[list[int]], cfg: PairConfig) -> dict[str, Any]:
    return {
        "id": plan.pair_id,
        "image_a": f"images/{plan.pair_id}_a.png",
        "image_b": f"images/{plan.pair_id}_b.png",
        "boxes": boxes,
        "changes": [c.to_dict() for c in plan.changes],
        "difficulty": plan.difficulty,
        "num_differences": len(plan.changes),
        "width": cfg.width,
        "height": cfg.height,
        "renderer": cfg.renderer,
        "scene_a": plan.scene_a.to_dict(),
        "scene_b": plan.scene_b.to_dict(),
    }


# ------------------------------------------------------------------------------------------- files


def _save_png(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(array).save(tmp)
    os.replace(tmp, path)


def render_flat_pair(cfg: PairConfig, difficulty: str, index: int) -> dict[str, Any]:
    """Plan, render (flat) and write one pair's images; return its record (runs in pool workers)."""
    out = Path(cfg.out)
    plan = plan_pair(cfg, difficulty, index)
    ra = render_flat(plan.scene_a, cfg.width, cfg.height)
    rb = render_flat(plan.scene_b, cfg.width, cfg.height)
    record = make_record(plan, change_boxes(plan, ra.mask, rb.mask), cfg)
    _save_png(ra.image, out / record["image_a"])
    _save_png(rb.image, out / record["image_b"])
    if cfg.save_masks:
        _save_png(ra.mask, out / "masks" / f"{plan.pair_id}_a.png")
        _save_png(rb.mask, out / "masks" / f"{plan.pair_id}_b.png")
    return record


def pairs_file(cfg: PairConfig) -> Path:
    i, k = cfg.shard
    name = PAIRS_FILE if k == 1 else f"pairs-{i:03d}-of-{k:03d}.jsonl"
    return Path(cfg.out) / name


def _load_done(path: Path) -> dict[str, dict[str, Any]]:
    """Records already written; a torn last line (a killed run) is cut off, a bad line elsewhere raises."""
    if not path.exists():
        return {}
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    done: dict[str, dict[str, Any]] = {}
    good_bytes = 0
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            good_bytes += len(line) + 1
            continue
        try:
            rec = json.loads(line)
            rec_id = rec["id"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            if lineno == len(lines) or (lineno == len(lines) - 1 and not lines[-1]):
                logger.warning("%s: dropping a torn last line %d (%s)", path, lineno, exc)
                break
            raise ValueError(f"{path}: line {lineno} is not a pair record ({exc}); fix or delete the line") from exc
        done[rec_id] = rec
        good_bytes += len(line) + 1
    if good_bytes < len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return done


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Pair records of a ``pairs*.jsonl`` file, or of every such file in a directory, sorted by id; image
    paths are made absolute. Raises ``ValueError`` naming the file, line and field of a bad record."""
    path = Path(path)
    files = sorted(path.glob("pairs*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no pairs*.jsonl in {path}")
    records = []
    for f in files:
        for lineno, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{f}: line {lineno}: not JSON ({exc})") from exc
            for key, typ in (("id", str), ("image_a", str), ("image_b", str), ("boxes", list),
                             ("changes", list), ("difficulty", str)):
                if not isinstance(rec.get(key), typ):
                    raise ValueError(f"{f}: line {lineno}: field {key!r} should be a {typ.__name__}, "
                                     f"got {rec.get(key)!r}")
            if len(rec["boxes"]) != len(rec["changes"]):
                raise ValueError(f"{f}: line {lineno}: {len(rec['boxes'])} boxes for {len(rec['changes'])} changes")
            for key in ("image_a", "image_b"):
                rec[key] = str((f.parent / rec[key]).resolve())
            records.append(rec)
    return sorted(records, key=lambda r: r["id"])


# ------------------------------------------------------------------------------------------- running


# Settings that do not change what a pair is: how many, who makes them, and what else is saved.
_RUN_ONLY = ("out", "n", "workers", "shard", "save_masks", "retries", "blender_threads")


def pairs_to_samples(pairs_file: str | Path, out_file: str | Path) -> Path:
    """Supervised samples (the training JSON of ``tinygg train``) asking the DiG question about each pair, answered
    with its true boxes in the norm format: the warm start before GRPO when rewards would be near zero.

    Image paths are written relative to ``out_file``'s folder (the samples' image root); written atomically."""
    from dig.prompt import instruction
    from tinygg.boxes import format_boxes, pixel_to_square

    out_file = Path(out_file)
    root = out_file.parent.resolve()
    samples = []
    for r in read_pairs(pairs_file):
        w, h = int(r["width"]), int(r["height"])
        boxes = [pixel_to_square(b, w, h) for b in r["boxes"]]
        samples.append({"id": f"dig_{r['id']}",
                        "images": [str(Path(r[k]).resolve().relative_to(root)) for k in ("image_a", "image_b")],
                        "conversations": [{"from": "human", "value": "<image>\n<image>\n" + instruction("norm")},
                                          {"from": "gpt", "value": format_boxes(boxes)}]})
    write_json(out_file, samples)
    return out_file


def _settings(cfg: PairConfig) -> dict[str, Any]:
    """The settings that decide a pair's content, as JSON values."""
    return json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in _RUN_ONLY}))


def settings_file(path: Path) -> Path:
    """The record of the settings a pairs file was made with (``pairs.jsonl`` -> ``pairs.settings.json``)."""
    return path.with_name(path.name.removesuffix(".jsonl") + ".settings.json")


def _check_resumable(path: Path, done: dict[str, dict[str, Any]], cfg: PairConfig) -> None:
    """Refuse to add pairs to a file made with other settings (it would mix two data sets); record them for a
    new file. Files from before the settings record are checked by their records' image size and zoom."""
    record, wanted = settings_file(path), _settings(cfg)
    if not done:  # nothing to mix with: (re)start the record
        record.write_text(json.dumps(wanted, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    elif record.exists():
        made = json.loads(record.read_text(encoding="utf-8"))
        diff = [f"{k} {made.get(k)!r} (now {v!r})" for k, v in wanted.items() if made.get(k) != v]
        if diff:
            raise ValueError(f"{path}: its {len(done)} pairs were made with {', '.join(diff)}. Use another --out "
                             f"or delete the file")
    else:
        for rec in done.values():
            zoom = (rec.get("scene_a") or {}).get("zoom", 1.0)
            if (rec.get("width"), rec.get("height"), zoom) != (cfg.width, cfg.height, cfg.zoom):
                raise ValueError(f"{path}: pair {rec['id']} was made at {rec.get('width')}x{rec.get('height')}, "
                                 f"zoom {zoom}; this run asks for {cfg.width}x{cfg.height}, zoom {cfg.zoom}. Use "
                                 f"another --out or delete the file")


def _shard_indices(cfg: PairConfig) -> list[int]:
    i, k = cfg.shard
    return [j for j in range(cfg.n) if j % k == i]


def generate_pairs(cfg: PairConfig, progress: bool = True) -> list[Path]:
    """Generate (or finish) the pairs of ``cfg``; returns the pairs file(s) written. ``curriculum`` writes
    ``single/``, ``dual/`` and ``mixed/`` under ``cfg.out``."""
    if cfg.difficulty == "curriculum":
        return [p for d in CURRICULUM
                for p in generate_pairs(replace(cfg, out=Path(cfg.out) / d, difficulty=d), progress)]
    out = Path(cfg.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if cfg.save_masks:
        (out / "masks").mkdir(exist_ok=True)
    path = pairs_file(cfg)
    done = _load_done(path)
    _check_resumable(path, done, cfg)
    indices = _shard_indices(cfg)
    todo = [j for j in indices if pair_id(cfg.difficulty, j) not in done]
    if done:
        logger.info("%s: resuming, %d of %d pairs already done", path, len(indices) - len(todo), len(indices))
    if todo:
        produce = _flat_records if cfg.renderer == "flat" else _blender_records
        with open(path, "a", encoding="utf-8") as fh, tqdm(total=len(indices), initial=len(indices) - len(todo),
                                                            desc=f"dig {cfg.difficulty}", unit="pair",
                                                            disable=not progress) as bar:
            for record in produce(cfg, todo):
                fh.write(json.dumps(record, sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                done[record["id"]] = record
                bar.update(1)
    missing = [j for j in indices if pair_id(cfg.difficulty, j) not in done]
    if missing:
        logger.warning("%s: %d pairs failed (e.g. %s); run the same command again to retry them",
                       path, len(missing), pair_id(cfg.difficulty, missing[0]))
    else:
        wanted = {pair_id(cfg.difficulty, j) for j in indices}
        ordered = sorted((r for r in done.values() if r["id"] in wanted), key=lambda r: r["id"])
        write_jsonl(path, ordered, sort_keys=True)
    return [path]


def _flat_records(cfg: PairConfig, todo: list[int]) -> Iterator[dict[str, Any]]:
    if cfg.workers == 1:
        for j in todo:
            yield render_flat_pair(cfg, cfg.difficulty, j)
        return
    with ProcessPoolExecutor(cfg.workers) as pool:
        yield from _bounded(pool.submit, render_flat_pair, [(cfg, cfg.difficulty, j) for j in todo], 4 * cfg.workers)


def _bounded(submit: Callable[..., Future], fn: Callable[..., Any], jobs: list[tuple], limit: int) -> Iterator[Any]:
    """Run ``fn(*job)`` for every job with at most ``limit`` in flight; yield results as they complete."""
    pending: set[Future] = set()
    it = iter(jobs)
    while True:
        for job in it:
            pending.add(submit(fn, *job))
            if len(pending) >= limit:
                break
        if not pending:
            return
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in finished:
            yield fut.result()


def _blender_records(cfg: PairConfig, todo: list[int]) -> Iterator[dict[str, Any]]:
    from dig.render_blender import BlenderPool, RenderError  # bpy lives in the workers only

    out = Path(cfg.out)
    tmp_masks = out / ".masks_tmp"
    tmp_masks.mkdir(exist_ok=True)
    mask_dir = out / "masks" if cfg.save_masks else tmp_masks
    threads = cfg.blender_threads or max(1, (os.cpu_count() or 1) // cfg.workers)

    def job(plan: PairPlan) -> dict[str, Any]:
        return {
            "id": plan.pair_id, "width": cfg.width, "height": cfg.height, "samples": cfg.samples,
            "seed": cfg.seed, "threads": threads, "denoise": cfg.denoise,
            "scenes": [plan.scene_a.to_dict(), plan.scene_b.to_dict()],
            "images": [str(out / "images" / f"{plan.pair_id}_a.png"), str(out / "images" / f"{plan.pair_id}_b.png")],
            "masks": [str(mask_dir / f"{plan.pair_id}_a.png"), str(mask_dir / f"{plan.pair_id}_b.png")],
        }

    rejects: dict[int, int] = {}
    with BlenderPool(cfg.workers, retries=cfg.retries) as pool:
        pending: dict[Future, PairPlan] = {}
        it = iter(todo)
        while True:
            for j in it:
                plan = plan_pair(cfg, cfg.difficulty, j)
                pending[pool.submit(job(plan))] = plan
                if len(pending) >= 2 * cfg.workers:
                    break
            if not pending:
                break
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                plan = pending.pop(fut)
                try:
                    fut.result()
                except RenderError as exc:
                    logger.error("pair %s failed to render: %s", plan.pair_id, exc)
                    continue
                paths = job(plan)["masks"]
                mask_a, mask_b = (np.asarray(Image.open(p)) for p in paths)
                reason = check_masks(plan, mask_a, mask_b, cfg)
                if reason is not None:  # Blender's pixels disagree with the flat proxy: next attempt
                    logger.info("pair %s attempt %d dropped after rendering: %s", plan.pair_id, plan.attempt, reason)
                    rejects[plan.index] = rejects.get(plan.index, 0) + 1
                    if rejects[plan.index] > MAX_RENDER_REJECTS:
                        logger.error("pair %s: %d rendered attempts failed the mask checks; skipped",
                                     plan.pair_id, rejects[plan.index])
                        continue
                    nxt = plan_pair(cfg, cfg.difficulty, plan.index, plan.attempt + 1)
                    pending[pool.submit(job(nxt))] = nxt
                    continue
                record = make_record(plan, change_boxes(plan, mask_a, mask_b), cfg)
                if not cfg.save_masks:
                    for p in paths:
                        Path(p).unlink(missing_ok=True)
                yield record
    if not any(tmp_masks.iterdir()):
        tmp_masks.rmdir()
