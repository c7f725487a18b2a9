"""The synthetic grounding corpus: unique referring expressions, boxes in the image, the sample schema,
the REC test file, easy single-object data and the CLI."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest

from dig import properties as P
from dig.camera import ground_directions
from dig.cli import register_synth
from dig.masks import mask_box
from dig.render_flat import render_mask
from dig.scene import Scene, SceneObject
from dig.synth import TASKS, SynthConfig, caption_text, generate_synth
from tinygg.boxes import parse_boxes, square_to_pixel

W, H = 128, 96
_REL = {" left of the ": "left", " right of the ": "right", " in front of the ": "front", " behind the ": "behind"}


def _words_match(obj: SceneObject, phrase: str) -> bool:
    """Independent reading of a noun phrase such as 'small red metal cube' or 'blue object'."""
    for word in phrase.split():
        if word == "object":
            continue
        attr = next(a for a, vocab in (("size", P.SIZES), ("color", P.COLORS), ("material", P.MATERIALS),
                                        ("shape", P.SHAPES)) if word in vocab)
        if getattr(obj, attr) != word:
            return False
    return True


def _referents(text: str, scene: Scene) -> list[int]:
    assert text.startswith("the ")
    body = text[4:]
    for phrase, rel in _REL.items():
        if phrase in body:
            head, anchor_text = body.split(phrase)
            anchors = [o for o in scene.objects if _words_match(o, anchor_text)]
            assert len(anchors) == 1, f"anchor of {text!r} is not unique"
            vec = ground_directions()[rel]
            return [i for i, o in enumerate(scene.objects) if _words_match(o, head) and o is not anchors[0]
                    and (o.x - anchors[0].x) * vec[0] + (o.y - anchors[0].y) * vec[1] > 0]
    return [i for i, o in enumerate(scene.objects) if _words_match(o, body)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    counts = generate_synth(SynthConfig(out=out, n=30, size=(W, H), per_image=3), progress=False)
    assert counts["train.json"] > 0 and counts["val.json"] > 0 and counts["test_rec.jsonl"] > 0
    return out


def _scenes(out: Path) -> dict[str, dict]:
    return {r["image"]: r for r in map(json.loads, (out / "scenes.jsonl").read_text().splitlines())}


def _object_in_box(text: str, scene: Scene, mask: np.ndarray) -> int:
    """Index of the object whose mask box is the first box written in ``text``."""
    box = square_to_pixel(parse_boxes(text)[0], W, H)
    hits = [i for i in range(len(scene)) if mask_box(mask, i + 1) is not None and
            np.abs(box - mask_box(mask, i + 1)).max() <= 0.001 * W + 1e-9]
    return hits[0]


def test_expressions_are_unique_and_boxes_are_their_objects(corpus: Path) -> None:
    scenes = _scenes(corpus)
    relational = 0
    attributes_asked: set[str] = set()
    masks: dict[str, np.ndarray] = {}
    captioned: list[str] = []
    for split in ("train", "val", "test"):
        for s in json.loads((corpus / f"{split}.json").read_text()):
            if "_list2box_" in s["id"]:
                continue  # text only: test_list2box_lists_the_visible_objects_and_answers_the_named_one
            assert scenes[s["image"]]["split"] == split
            human, gpt = s["conversations"][0]["value"], s["conversations"][1]["value"]
            assert human.startswith("<image>\n") and human.count("<image>") == 1
            assert human.count("<object>") == len(s.get("objects", []))
            scene = Scene.from_dict(scenes[s["image"]]["scene"])
            if s["image"] not in masks:
                masks[s["image"]] = render_mask(scene, W, H)
            mask = masks[s["image"]]
            for box in s.get("objects", []):
                assert 0 <= box[0] < box[2] <= W and 0 <= box[1] < box[3] <= H
            m = re.match(r"<image>\nOutput the coordinate of (.*[^.])$", human)
            if m:
                (target,) = _referents(m.group(1), scene)  # exactly one object
                relational += any(p in m.group(1) for p in _REL)
                got = square_to_pixel(parse_boxes(gpt)[0], W, H)
                assert np.abs(got - mask_box(mask, target + 1)).max() <= 0.001 * W + 1e-9
            m = re.match(r"<image>\nWhich option is (.*)\? ((?:\([A-D]\) <object> ?)+) Answer", human)
            if m:
                (target,) = _referents(m.group(1), scene)
                letter = "ABCD".index(gpt.strip("()"))
                assert s["objects"][letter] == mask_box(mask, target + 1)
            if "What object is in the region" in human:
                assert gpt == f"a {scene.objects[_object_in_box(human, scene, mask)].describe()}"
            m = re.match(r"<image>\nWhat (size|color|material|shape) is the object in the region (\[.*\])\?$", human)
            if m:
                assert gpt == getattr(scene.objects[_object_in_box(m.group(2), scene, mask)], m.group(1))
                attributes_asked.add(m.group(1))
            if human == "<image>\nDescribe the image.":  # every visible object, left to right by box centre
                seen = [(b[0] + b[2], b[1] + b[3], i) for i in range(len(scene))
                        if (b := mask_box(mask, i + 1)) is not None
                        and (mask == i + 1).sum() >= P.min_visible_pixels(W, H)]
                assert gpt == caption_text([scene.objects[i].describe() for *_, i in sorted(seen)])
                captioned.append(s["image"])
    assert relational > 0
    assert sorted(captioned) == sorted(scenes)  # one caption per image
    assert attributes_asked == {"size", "color", "material", "shape"}  # box2attr asks about each attribute


def _list_image(sample: dict) -> str:
    """The image of the scene a text-only list2box sample describes (from its id)."""
    scene_id, task, _ = sample["id"].rsplit("_", 2)
    assert task == "list2box" and "image" not in sample
    return f"images/{scene_id}.png"


def test_list2box_lists_the_visible_objects_and_answers_the_named_one(corpus: Path) -> None:
    """Text only: every visible object once, in a random order, with its description and mask box; then the REC
    prompt with an attribute-only expression that is unique in the scene; the answer is that object's box. The
    samples encode without pixels and train beside image samples in one batch."""
    from tinygg.build import build_model
    from tinygg.data.dataset import Collator, DataSource, SupervisedDataset, mix

    scenes = _scenes(corpus)
    first_listed: set[str] = set()
    n = 0
    for split in ("train", "val", "test"):
        for s in json.loads((corpus / f"{split}.json").read_text()):
            if "_list2box_" not in s["id"]:
                continue
            n += 1
            image = _list_image(s)
            assert scenes[image]["split"] == split and "objects" not in s
            scene = Scene.from_dict(scenes[image]["scene"])
            mask = render_mask(scene, W, H)
            (human, gpt) = (t["value"] for t in s["conversations"])
            m = re.fullmatch(r"Objects: (.*)\.\nOutput the coordinate of (.*[^.])", human)
            assert m and "<image>" not in human and not any(p in m.group(2) for p in _REL)
            visible = {i for i in range(len(scene)) if (mask == i + 1).sum() >= P.min_visible_pixels(W, H)}
            listed = []
            for item in m.group(1).split("; "):
                desc, box = re.fullmatch(r"a (.*) (\[.*\])", item).groups()
                i = _object_in_box(box, scene, mask)
                assert scene.objects[i].describe() == desc
                listed.append(i)
            assert sorted(listed) == sorted(visible)
            first_listed.add(scene.objects[listed[0]].describe())
            (target,) = _referents(m.group(2), scene)
            assert target in visible and _object_in_box(gpt, scene, mask) == target
    assert n > 0 and len(first_listed) > 1  # not always the same object first

    _, processor = build_model("tiny")
    ds = SupervisedDataset(mix([DataSource(str(corpus / "train.json"))]), processor)
    rows = [i for i in range(len(ds)) if "_list2box_" in ds.items[i][0].id][:2]
    items = [ds[i] for i in rows]
    assert all(len(item["pixel_values"]) == 0 for item in items)
    image_row = next(i for i in range(len(ds)) if ds.items[i][0].images)
    batch = Collator(processor.tokenizer.pad_token_id)(items + [ds[image_row]])
    assert batch["pixel_values"].shape[0] == 1 + len(ds.items[image_row][0].objects)


def test_rec_file_rows_are_unique_expressions_inside_the_image(corpus: Path) -> None:
    scenes = _scenes(corpus)
    rows = [json.loads(line) for line in (corpus / "test_rec.jsonl").read_text().splitlines()]
    assert rows
    for row in rows:
        assert set(row) == {"img_path", "expression", "bbox"}
        assert (corpus / row["img_path"]).exists() and scenes[row["img_path"]]["split"] == "test"
        scene = Scene.from_dict(scenes[row["img_path"]]["scene"])
        (target,) = _referents(row["expression"], scene)
        assert row["bbox"] == mask_box(render_mask(scene, W, H), target + 1)
        x1, y1, x2, y2 = row["bbox"]
        assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H


def test_splits_do_not_share_images(corpus: Path) -> None:
    images = {split: {s["image"] if "image" in s else _list_image(s)
                      for s in json.loads((corpus / f"{split}.json").read_text())}
              for split in ("train", "val", "test")}
    assert not images["train"] & images["val"] and not images["train"] & images["test"]
    assert not images["val"] & images["test"]


def test_easy_single_object_data_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="tinygg data")
    register_synth(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", "--out", str(tmp_path), "--n", "8", "--size", "64x48", "--min-objects", "1",
                              "--max-objects", "1", "--tasks", "object2box,text2box", "--per-image", "1",
                              "--no-progress"])
    assert args.func(args) == 0
    assert "train.json:" in capsys.readouterr().out
    samples = json.loads((tmp_path / "train.json").read_text())
    assert samples and {s["id"].split("_")[2] for s in samples} <= {"object2box", "text2box"}
    for s in samples:
        answer = parse_boxes(s["conversations"][1]["value"])
        assert answer.shape == (1, 4)
        if s.get("objects"):  # object image -> box: the answer is the crop's own box
            assert np.abs(square_to_pixel(answer[0], 64, 48) - s["objects"][0]).max() <= 0.001 * 64 + 1e-9
    with pytest.raises(ValueError, match="--tasks"):
        SynthConfig(out=tmp_path, tasks=("summary",))
    args = parser.parse_args(["synth", "--out", str(tmp_path / "zoomed"), "--n", "8", "--size", "64x48",
                              "--min-objects", "1", "--max-objects", "1", "--tasks", "text2box", "--per-image", "1",
                              "--zoom", "2", "--no-progress"])
    assert args.func(args) == 0
    scenes = [json.loads(line) for line in (tmp_path / "zoomed" / "scenes.jsonl").read_text().splitlines()]
    assert {r["scene"]["zoom"] for r in scenes} == {2.0}

    def mean_area(folder: Path) -> float:
        boxes = [parse_boxes(s["conversations"][1]["value"])[0] for s in json.loads((folder / "train.json").read_text())]
        return float(np.mean([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]))
    assert mean_area(tmp_path / "zoomed") > 2.5 * mean_area(tmp_path)  # the same kind of object, twice the size


def test_synth_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate_synth(SynthConfig(out=tmp_path / name, n=6, size=(W, H)), progress=False)
    for f in ("train.json", "val.json", "test.json", "test_rec.jsonl", "images/synth_000003.png"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    # a rerun in the same folder at another zoom renders its images anew instead of keeping the old ones
    generate_synth(SynthConfig(out=tmp_path / "b", n=6, size=(W, H), max_objects=5, zoom=2.0), progress=False)
    generate_synth(SynthConfig(out=tmp_path / "c", n=6, size=(W, H), max_objects=5, zoom=2.0), progress=False)
    for f in ("train.json", "images/synth_000003.png"):
        assert (tmp_path / "b" / f).read_bytes() == (tmp_path / "c" / f).read_bytes()
    assert (tmp_path / "b" / "images/synth_000003.png").read_bytes() != (
        tmp_path / "a" / "images/synth_000003.png").read_bytes()


def test_rec_training_prompt_is_the_evaluation_prompt(tmp_path):
    """A model trained on the corpus is asked exactly what it learnt (a final full stop cost 35 points)."""
    from tinygg.evaluate.rec import DEFAULT_PROMPT, make_prompt

    out = tmp_path / "s"
    generate_synth(SynthConfig(out=str(out), n=6, tasks=("text2box",), seed=3), progress=False)
    rows = [json.loads(x) for x in (out / "test_rec.jsonl").read_text().splitlines()]
    asked = {s["conversations"][0]["value"] for split in ("train", "val", "test")
             for s in json.loads((out / f"{split}.json").read_text())}
    for r in rows:
        assert f"<image>\n{make_prompt(DEFAULT_PROMPT, r['expression'])}" in asked


def test_multi_turn_conversations_keep_every_question_and_encode(tmp_path: Path) -> None:
    """--turns K groups one image's questions into conversations of up to K turns: the same questions and
    answers as single-turn samples, the image once, each <object> box in turn order, and the training
    dataset encodes them with a label span per answer."""
    from tinygg.build import build_model
    from tinygg.data.dataset import DataSource, SupervisedDataset, mix

    kw = dict(n=8, size=(W, H), min_objects=2, max_objects=4, per_image=2, seed=5, val_fraction=0,
              test_fraction=0, tasks=tuple(t for t in TASKS if t != "list2box"))
    generate_synth(SynthConfig(out=tmp_path / "one", **kw), progress=False)
    generate_synth(SynthConfig(out=tmp_path / "multi", turns=3, **kw), progress=False)
    single = json.loads((tmp_path / "one" / "train.json").read_text())
    multi = json.loads((tmp_path / "multi" / "train.json").read_text())

    def qa(samples: list[dict]) -> list[tuple]:
        out = []
        for s in samples:
            objs = iter(s.get("objects", []))
            for q, a in zip(s["conversations"][::2], s["conversations"][1::2]):
                boxes = tuple(tuple(next(objs)) for _ in range(q["value"].count("<object>")))
                out.append((s["image"], q["value"].removeprefix("<image>\n"), a["value"], boxes))
        return sorted(out)

    assert qa(multi) == qa(single)
    assert len(multi) < len(single) and max(len(s["conversations"]) for s in multi) == 6
    assert all(sum(t["value"].count("<image>") for t in s["conversations"]) == 1 for s in multi)
    assert all(s["conversations"][0]["value"].startswith("<image>\n") for s in multi)

    _, processor = build_model("tiny")
    ds = SupervisedDataset(mix([DataSource(str(tmp_path / "multi" / "train.json"))]), processor)
    for i in range(len(ds)):
        item, sample = ds[i], ds.items[i][0]
        labels = item["labels"].tolist()
        spans = sum(1 for k in range(len(labels)) if labels[k] != -100 and (k == 0 or labels[k - 1] == -100))
        assert spans == len(sample.conversations) // 2
        assert item["pixel_values"].shape[0] == 1 + len(sample.objects)


def test_a_conversation_never_asks_about_one_object_twice(tmp_path: Path) -> None:
    """An earlier turn must not hold a later turn's answer (the region of 'what is in [box]' is the answer to
    'where is the blue cube'): every box in a conversation's text appears in one turn only."""
    generate_synth(SynthConfig(out=tmp_path, n=12, size=(W, H), min_objects=2, max_objects=4, per_image=2,
                               turns=4, tasks=("text2box", "box2text", "object2box"), seed=7), progress=False)
    for split in ("train", "val", "test"):
        for s in json.loads((tmp_path / f"{split}.json").read_text()):
            seen: list[str] = []
            for q, a in zip(s["conversations"][::2], s["conversations"][1::2]):
                boxes = set(re.findall(r"\[[^\]]*\]", q["value"] + a["value"]))
                assert not boxes & set(seen), s["id"]
                seen += boxes


def test_question_first_moves_only_the_image_placeholder(tmp_path: Path) -> None:
    """--question-first writes the same samples with ``<image>`` after the first question instead of before it
    (multi-turn conversations too: later turns carry no placeholder), and the images do not change."""
    kw = dict(n=6, size=(W, H), min_objects=2, max_objects=4, seed=4, turns=2,
              tasks=tuple(t for t in TASKS if t not in ("list2box", "caption")))
    generate_synth(SynthConfig(out=tmp_path / "a", **kw), progress=False)
    generate_synth(SynthConfig(out=tmp_path / "q", question_first=True, **kw), progress=False)
    for split in ("train", "val", "test"):
        a = json.loads((tmp_path / "a" / f"{split}.json").read_text())
        q = json.loads((tmp_path / "q" / f"{split}.json").read_text())
        assert len(a) == len(q) > 0
        for sa, sq in zip(a, q):
            first_a, first_q = sa["conversations"][0]["value"], sq["conversations"][0]["value"]
            assert first_a.startswith("<image>\n") and first_q == first_a.removeprefix("<image>\n") + "\n<image>"
            assert sa["conversations"][1:] == sq["conversations"][1:] and sa.get("objects") == sq.get("objects")
    assert (tmp_path / "a" / "images/synth_000002.png").read_bytes() == (
        tmp_path / "q" / "images/synth_000002.png").read_bytes()
    assert json.loads((tmp_path / "q" / "synth_info.json").read_text())["config"]["question_first"] is True
