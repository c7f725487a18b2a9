"""A synthetic grounding corpus from CLEVR scenes (flat renderer): the training-sample schema of
``tinygg`` with referring expressions that are unique in their scene.

Tasks (the paper's fine-grained grounding tasks, section 3.2), one sample each:

* ``text2box``: "Output the coordinate of the small red metal cube" -> ``[x1,y1,x2,y2]`` (the paper's unified
  REC prompt, word for word, which is also ``tinygg eval rec``'s default: a model trained from scratch on
  this corpus scored 20% Acc@0.5 with the evaluation prompt against 55% with the training prompt when the
  two differed by a final full stop)
* ``box2text``: "What object is in the region [..]?" -> "a small red metal cube"
* ``box2attr``: "What color is the object in the region [..]?" -> "red" (one attribute per question, size,
  colour, material or shape at random): the whole answer is the attribute, so its gradient is not shared
  with the rest of a description (docs/demo_recipe.md section 8: a colour-only question taught the tiny model
  colour with one of two data orders, box2text never did; this boxed form has not been trained on yet)
* ``caption``: "Describe the image." -> "a large blue metal cube and a small red rubber sphere" (every visible
  object, left to right; one per image): the paper's stage-1 image-caption alignment. On single-object scenes
  at zoom 2, 2000 steps of captions alone from random init taught the tiny model colour to 33-87% (two
  wordings; docs/demo_recipe.md section 10); never grouped into conversations, where it would give a box2text
  answer away
* ``object2box``: "Where is <object> in the image? ..." (``objects`` holds the crop's pixel box) -> box
* ``text2object``: "Which option is the cube left of the blue sphere? (A) <object> (B) <object> ..." -> "(B)"
* ``list2box``: no image. "Objects: a large blue rubber sphere [..]; a small red metal cube [..].\n" then the
  ``text2box`` prompt for one of them ("Output the coordinate of the red cube") -> its box, copied from the list.
  The same lookup as ``text2box`` (match the expression's words against the objects, answer the matching box)
  written in words, where a language model learns it as associative recall; in a toy, teaching it beside the
  image task was what made a 4-layer model bind words to image objects (docs/demo_recipe.md section 12). Objects
  are listed in random order, each with its full description; the expression is attribute-only (relations would
  ask for arithmetic on coordinates); never grouped into conversations

Expressions name attributes in CLEVR's order (size, colour, material, shape; "object" when the shape is
left out) and may add one spatial relation to a uniquely described anchor ("left of", "right of",
"in front of", "behind", along the camera's ground directions as CLEVR defines them). Every expression
matches exactly one object of its scene, counting hidden objects too.

Output under ``--out`` (the image root): ``images/``, ``train.json``, ``val.json``, ``test.json`` (lists of
samples), ``test_rec.jsonl`` (``{"img_path", "expression", "bbox"}`` pixel rows for ``tinygg eval rec``),
``scenes.jsonl`` (each image's scene spec and split) and ``synth_info.json``. Splits are by scene.
Easy data for a model trained from scratch:
``--min-objects 1 --max-objects 1 --tasks object2box,text2box``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from dig import properties as P
from dig.camera import ground_directions
from dig.masks import mask_box, visible_counts
from dig.render_flat import render_flat
from dig.scene import ATTRIBUTES, Scene, SceneObject, check_object_counts, check_zoom, sample_scene
from tinygg.boxes import box_iou, format_box, pixel_to_square
from tinygg.evaluate.rec import DEFAULT_PROMPT, make_prompt
from tinygg.fileio import write_json, write_jsonl, write_text_atomic

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("text2box", "box2text", "object2box", "text2object", "box2attr", "caption", "list2box")
RELATIONS: dict[str, str] = {"left": "left of", "right": "right of", "front": "in front of", "behind": "behind"}
WORD_ORDER = ("size", "color", "material", "shape")  # the order referring expressions name attributes in
CAPTION_PROMPT = "Describe the image."
LIST_PREFIX = "Objects: "
_OPTION_LETTERS = "ABCD"

_MAX_OPTION_IOU = 0.3  # options whose boxes overlap more than this are not shown together
_SCENE_STREAM = 7  # keeps synth scenes apart from DiG pair scenes for the same seed


@dataclass(frozen=True)
class Expression:
    """Attributes of the target, optionally a relation to an anchor described by its own attributes."""

    attrs: tuple[tuple[str, str], ...]
    relation: str | None = None
    anchor: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        words = _noun_phrase(self.attrs)
        if self.relation is None:
            return f"the {words}"
        return f"the {words} {RELATIONS[self.relation]} the {_noun_phrase(self.anchor)}"


def _noun_phrase(attrs: tuple[tuple[str, str], ...]) -> str:
    d = dict(attrs)
    words = [d[a] for a in WORD_ORDER if a in d and a != "shape"]
    return " ".join(words + [d.get("shape", "object")])


def _matches(obj: SceneObject, attrs: tuple[tuple[str, str], ...]) -> bool:
    return all(getattr(obj, a) == v for a, v in attrs)


def relation_holds(obj: SceneObject, anchor: SceneObject, relation: str) -> bool:
    """CLEVR's relation: ``obj`` lies on the ``relation`` side of ``anchor`` along the ground direction."""
    vec = ground_directions()[relation]
    return obj is not anchor and (obj.x - anchor.x) * vec[0] + (obj.y - anchor.y) * vec[1] > 0


def resolve(expr: Expression, scene: Scene) -> list[int]:
    """Indices of the scene's objects that ``expr`` describes."""
    cands = [i for i, o in enumerate(scene.objects) if _matches(o, expr.attrs)]
    if expr.relation is None:
        return cands
    anchors = [a for a in scene.objects if _matches(a, expr.anchor)]
    if len(anchors) != 1:
        return []
    return [i for i in cands if relation_holds(scene.objects[i], anchors[0], expr.relation)]


def _attr_sets(obj: SceneObject, min_size: int = 1) -> list[tuple[tuple[str, str], ...]]:
    """Every subset of the object's attributes with at least ``min_size`` entries, smallest first."""
    return [tuple((a, getattr(obj, a)) for a in subset)
            for k in range(min_size, len(ATTRIBUTES) + 1) for subset in combinations(WORD_ORDER, k)]


def unique_expressions(scene: Scene, target: int, relations: bool = True) -> list[Expression]:
    """Expressions that pick out exactly ``scene.objects[target]``: the smallest unique attribute sets,
    the full description when it is unique, and (``relations``) the shortest relational ones."""
    obj = scene.objects[target]
    out: list[Expression] = []
    unique_sets = [s for s in _attr_sets(obj) if resolve(Expression(s), scene) == [target]]
    if unique_sets:
        smallest = len(unique_sets[0])
        out.extend(Expression(s) for s in unique_sets if len(s) == smallest)
        if len(unique_sets[-1]) > smallest:
            out.append(Expression(unique_sets[-1]))
    if relations:
        for j, anchor in enumerate(scene.objects):
            if j == target:
                continue
            anchor_sets = [s for s in _attr_sets(anchor) if resolve(Expression(s), scene) == [j]]
            if not anchor_sets:
                continue
            for rel in RELATIONS:
                if not relation_holds(obj, anchor, rel):
                    continue
                for s in _attr_sets(obj, min_size=0):
                    expr = Expression(s, rel, anchor_sets[0])
                    if resolve(expr, scene) == [target]:
                        out.append(expr)
                        break
    return out


@dataclass
class SynthConfig:
    out: str | Path
    n: int = 1000
    size: tuple[int, int] = P.DEMO_SIZE
    min_objects: int = P.MIN_OBJECTS
    max_objects: int = P.MAX_OBJECTS
    zoom: float = 1.0  # camera framing (dig.scene.Scene): 2 shows objects twice as large
    tasks: tuple[str, ...] = TASKS
    per_image: int = 2  # samples per task per image
    turns: int = 1  # questions per conversation: >1 asks several about one image in one sequence
    relations: bool = True
    question_first: bool = False  # the question before <image> (image tokens then see it); else <image> first
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ValueError(f"--tasks: expected a comma-separated subset of {','.join(TASKS)}, got {self.tasks}")
        check_object_counts(self.min_objects, self.max_objects)
        check_zoom(self.zoom, "--zoom")
        if self.n < 1 or self.per_image < 1 or self.turns < 1:
            raise ValueError(f"--n, --per-image and --turns must be >= 1, got {self.n}, {self.per_image} and "
                             f"{self.turns}")
        if self.val_fraction < 0 or self.test_fraction < 0 or self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"--val-fraction + --test-fraction must be in [0, 1), got "
                             f"{self.val_fraction} + {self.test_fraction}")


def config_record(cfg: SynthConfig) -> dict[str, Any]:
    """``cfg`` as ``synth_info.json`` records it under ``config`` (tuples as lists, the path as a string)."""
    return {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
            for k, v in asdict(cfg).items()}


def _splits(cfg: SynthConfig) -> list[str]:
    """Split name per scene index: a seeded permutation, at least one val/test scene when asked for."""
    n = cfg.n
    n_test = max(1, round(n * cfg.test_fraction)) if cfg.test_fraction > 0 and n >= 3 else 0
    n_val = max(1, round(n * cfg.val_fraction)) if cfg.val_fraction > 0 and n >= 3 else 0
    names = ["train"] * n
    order = np.random.default_rng([cfg.seed, _SCENE_STREAM, n]).permutation(n)
    for k, i in enumerate(order[:n_test + n_val]):
        names[int(i)] = "test" if k < n_test else "val"
    return names


def scene_samples(scene: Scene, mask: np.ndarray, image: str, scene_id: str, cfg: SynthConfig,
                  rng: np.random.Generator) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training samples and REC rows of one rendered scene."""
    w, h = cfg.size
    thr = P.min_visible_pixels(w, h)
    counts = visible_counts(mask, len(scene))
    visible = [i for i in range(len(scene)) if counts[i] >= thr]
    boxes = {i: mask_box(mask, i + 1) for i in visible}
    samples: list[dict[str, Any]] = []
    targets_of: list[int] = []  # the object each sample asks about
    rec_rows: list[dict[str, Any]] = []
    exprs = {i: unique_expressions(scene, i, cfg.relations) for i in visible}
    referable = [i for i in visible if exprs[i]]

    def box_text(i: int) -> str:
        return format_box(pixel_to_square(boxes[i], w, h))

    def ask(question: str) -> str:
        return with_image(question, cfg.question_first)

    def choose_expression(i: int) -> str:
        """Half the time an attribute-only expression when one exists, else any (relations included)."""
        plain = [e for e in exprs[i] if e.relation is None]
        pool = plain if plain and rng.random() < 0.5 else exprs[i]
        return pool[int(rng.integers(len(pool)))].text()

    def pick(options: list[int]) -> list[int]:
        return [options[int(k)] for k in rng.permutation(len(options))[:cfg.per_image]]

    captions: list[dict[str, Any]] = []
    if "caption" in cfg.tasks and visible:
        in_order = sorted(visible, key=lambda i: (boxes[i][0] + boxes[i][2], boxes[i][1] + boxes[i][3]))
        captions.append({"id": f"{scene_id}_caption_0", "image": image, "conversations": [
            {"from": "human", "value": ask(CAPTION_PROMPT)},
            {"from": "gpt", "value": caption_text([scene.objects[i].describe() for i in in_order])}]})
    for task in (t for t in cfg.tasks if t not in ("caption", "list2box")):
        targets = pick(referable if task in ("text2box", "text2object") else visible)
        for k, i in enumerate(targets):
            sid = f"{scene_id}_{task}_{k}"
            if task == "text2box":
                text = choose_expression(i)
                turns = [ask(make_prompt(DEFAULT_PROMPT, text)), box_text(i)]
                rec_rows.append({"img_path": image, "expression": text, "bbox": boxes[i]})
                objects: list[list[int]] = []
            elif task == "box2text":
                turns = [ask(f"What object is in the region {box_text(i)}?"), f"a {scene.objects[i].describe()}"]
                objects = []
            elif task == "box2attr":
                attr = WORD_ORDER[int(rng.integers(len(WORD_ORDER)))]
                turns = [ask(f"What {attr} is the object in the region {box_text(i)}?"),
                         getattr(scene.objects[i], attr)]
                objects = []
            elif task == "object2box":
                turns = [ask("Where is <object> in the image? Output its coordinate."), box_text(i)]
                objects = [boxes[i]]
            else:
                options = [i]
                for j in rng.permutation(visible):
                    j = int(j)
                    if len(options) == min(len(_OPTION_LETTERS), 3) or j in options:
                        continue
                    if box_iou(np.array([boxes[j]]), np.array([boxes[o] for o in options])).max() <= _MAX_OPTION_IOU:
                        options.append(j)
                if len(options) < 2:
                    continue
                options = [options[int(m)] for m in rng.permutation(len(options))]
                text = choose_expression(i)
                listing = " ".join(f"({_OPTION_LETTERS[m]}) <object>" for m in range(len(options)))
                turns = [ask(f"Which option is {text}? {listing} Answer with the option's letter."),
                         f"({_OPTION_LETTERS[options.index(i)]})"]
                objects = [boxes[o] for o in options]
            sample: dict[str, Any] = {"id": sid, "image": image,
                                      "conversations": [{"from": "human", "value": turns[0]},
                                                        {"from": "gpt", "value": turns[1]}]}
            if objects:
                sample["objects"] = objects
            samples.append(sample)
            targets_of.append(i)
    if cfg.turns > 1:
        order = [int(k) for k in rng.permutation(len(samples))]
        groups = group_turns([targets_of[k] for k in order], cfg.turns)
        samples = [as_conversation([samples[order[k]] for k in g]) for g in groups]
    if "list2box" in cfg.tasks:  # drawn last, so the other tasks' samples do not depend on it
        samples += list_samples(scene, boxes, scene_id, cfg.per_image, rng, w, h)
    return samples + captions, rec_rows


def list_samples(scene: Scene, boxes: dict[int, list[int]], scene_id: str, n: int, rng: np.random.Generator,
                 w: int, h: int) -> list[dict[str, Any]]:
    """Up to ``n`` text-only ``list2box`` samples: the visible objects (``boxes``: pixel box per object index)
    listed in a random order with their boxes, then the REC prompt for one with an attribute-only expression."""
    plain = {i: unique_expressions(scene, i, relations=False) for i in boxes}
    referable = [i for i in boxes if plain[i]]
    out = []
    for k, m in enumerate(rng.permutation(len(referable))[:n]):
        i = referable[int(m)]
        listed = [int(j) for j in rng.permutation(sorted(boxes))]
        listing = "; ".join(f"a {scene.objects[j].describe()} {format_box(pixel_to_square(boxes[j], w, h))}"
                            for j in listed)
        text = plain[i][int(rng.integers(len(plain[i])))].text()
        out.append({"id": f"{scene_id}_list2box_{k}", "conversations": [
            {"from": "human", "value": f"{LIST_PREFIX}{listing}.\n{make_prompt(DEFAULT_PROMPT, text)}"},
            {"from": "gpt", "value": format_box(pixel_to_square(boxes[i], w, h))}]})
    return out


def with_image(question: str, question_first: bool = False) -> str:
    """The first human turn: ``<image>`` on its own line before the question, or after it (``question_first``:
    the image tokens can then attend to the question, docs/demo_recipe.md section 14).

    >>> with_image("Output the coordinate of the red cube"), with_image("Where?", question_first=True)
    ('<image>\\nOutput the coordinate of the red cube', 'Where?\\n<image>')
    """
    return f"{question}\n<image>" if question_first else f"<image>\n{question}"


def caption_text(descriptions: list[str]) -> str:
    """A scene caption from its objects' descriptions.

    >>> caption_text(["large blue metal cube", "small red rubber sphere", "small gray metal cylinder"])
    'a large blue metal cube, a small red rubber sphere and a small gray metal cylinder'
    """
    items = [f"a {d}" for d in descriptions]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def group_turns(targets: list[int], turns: int) -> list[list[int]]:
    """Positions of ``targets`` in conversations of at most ``turns`` questions, no object asked about twice
    in one conversation: an earlier turn would otherwise give a later one its answer (the box of "what is in
    [box]" is the answer to "where is the blue cube"), a shortcut that single questions at test time lack.

    >>> group_turns([0, 1, 0, 2, 1], 2)
    [[0, 1], [2, 3], [4]]
    """
    groups: list[list[int]] = []
    for k, t in enumerate(targets):
        home = next((g for g in groups if len(g) < turns and all(targets[j] != t for j in g)), None)
        if home is None:
            groups.append([k])
        else:
            home.append(k)
    return groups


def as_conversation(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Single-question samples of one image as one multi-turn sample: the image is shown once (first turn),
    the ``objects`` boxes follow their ``<object>`` placeholders in turn order.

    One sequence then carries several answers for one pass of the image tokens (and of the towers), the
    multi-round grounding conversations of the paper's data; a step supervises more answers per token.

    >>> a = {"id": "s_0", "image": "i.png", "conversations": [{"from": "human", "value": "<image>\\nQ1"},
    ...                                                      {"from": "gpt", "value": "A1"}]}
    >>> b = {"id": "s_1", "image": "i.png", "objects": [[1, 2, 3, 4]],
    ...      "conversations": [{"from": "human", "value": "<image>\\nQ2 <object>"},
    ...                        {"from": "gpt", "value": "A2"}]}
    >>> c = as_conversation([a, b])
    >>> [t["value"] for t in c["conversations"]], c["objects"], c["id"]
    (['<image>\\nQ1', 'A1', 'Q2 <object>', 'A2'], [[1, 2, 3, 4]], 's_0+1')
    """
    if len(samples) == 1:
        return samples[0]
    image = samples[0]["image"]
    if any(s["image"] != image for s in samples):
        raise ValueError("as_conversation: the samples show different images")
    turns: list[dict[str, str]] = []
    objects: list[list[int]] = []
    for k, s in enumerate(samples):
        human, gpt = s["conversations"]
        value = human["value"]
        if k:  # the image is shown once, with the first question (on either side of it: see with_image)
            value = value.removeprefix("<image>\n").removesuffix("\n<image>")
        turns += [{"from": "human", "value": value}, gpt]
        objects += s.get("objects", [])
    out: dict[str, Any] = {"id": f"{samples[0]['id']}+{len(samples) - 1}", "image": image,
                           "conversations": turns}
    if objects:
        out["objects"] = objects
    return out


def _claim_images(folder: Path, cfg: SynthConfig) -> None:
    """Image i depends only on these settings, so a rerun keeps images written under the same ones and deletes
    images written under others (a different size, zoom, seed or object count) before rendering anew."""
    key = {"seed": cfg.seed, "size": list(cfg.size), "min_objects": cfg.min_objects,
           "max_objects": cfg.max_objects, "zoom": cfg.zoom}
    key_file = folder / "render_key.json"
    if key_file.exists() and json.loads(key_file.read_text()) == key:
        return
    for old in folder.glob("synth_*.png"):
        old.unlink()
    key_file.write_text(json.dumps(key, sort_keys=True) + "\n")


def generate_synth(cfg: SynthConfig, progress: bool = True) -> dict[str, int]:
    """Write the corpus; returns the number of samples/rows per output file."""
    out = Path(cfg.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    _claim_images(out / "images", cfg)
    w, h = cfg.size
    split_of = _splits(cfg)
    data: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], "test": []}
    rec: list[dict[str, Any]] = []
    scenes: list[str] = []
    for i in tqdm(range(cfg.n), desc="synth", unit="scene", disable=not progress):
        rng = np.random.default_rng([cfg.seed, _SCENE_STREAM, i])
        scene = sample_scene(rng, min_objects=cfg.min_objects, max_objects=cfg.max_objects, zoom=cfg.zoom)
        render = render_flat(scene, w, h)
        image = f"images/synth_{i:06d}.png"
        path = out / image
        if not path.exists():  # deterministic: an earlier run wrote the same pixels
            Image.fromarray(render.image).save(path.with_name(path.name + ".tmp.png"))
            os.replace(path.with_name(path.name + ".tmp.png"), path)
        samples, rows = scene_samples(scene, render.mask, image, f"synth_{i:06d}", cfg, rng)
        data[split_of[i]].extend(samples)
        scenes.append(json.dumps({"image": image, "split": split_of[i], "scene": scene.to_dict()}) + "\n")
        if split_of[i] == "test":
            rec.extend(rows)
    for name, samples in data.items():
        write_json(out / f"{name}.json", samples)
    write_jsonl(out / "test_rec.jsonl", rec)
    write_text_atomic(out / "scenes.jsonl", "".join(scenes))
    counts = {f"{k}.json": len(v) for k, v in data.items()} | {"test_rec.jsonl": len(rec)}
    info = {"config": config_record(cfg), "counts": counts, "image_root": "."}
    write_json(out / "synth_info.json", info)
    logger.info("synthetic corpus in %s: %s", out, counts)
    return counts
