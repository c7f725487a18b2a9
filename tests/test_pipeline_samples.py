"""Sample families, object marks, the paper's filters, and the training-schema validation."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from data_pipeline import families
from data_pipeline.filters import FilterSettings, drop_reason
from data_pipeline.json_repair import MalformedAnswer
from data_pipeline.markup import UnknownObjectMark, box_text, render
from data_pipeline.schema import validate_samples
from data_pipeline.stages.export import training_sample
from data_pipeline.stages.relate import parse_relations
from data_pipeline.templates import Templates
from tinygg.boxes import parse_box, square_to_pixel

W, H = 640, 480


def _record() -> dict[str, Any]:
    return {
        "image_id": "img.jpg",
        "width": W,
        "height": H,
        "objects": [
            {"id": "o1", "name": "man", "box": [100.0, 50.0, 300.0, 460.0], "score": 0.9},
            {"id": "o2", "name": "dog", "box": [350.0, 300.0, 500.0, 470.0], "score": 0.8},
            {"id": "o3", "name": "dog", "box": [520.0, 320.0, 630.0, 470.0], "score": 0.2},
            {"id": "o4", "name": "ball", "box": [10.0, 10.0, 40.0, 40.0], "score": 0.7},
        ],
    }


def _object_count(sample: dict[str, Any]) -> int:
    return "".join(t["value"] for t in sample["conversations"]).count("<object>")


def test_box_text_round_trips_to_the_pixel_box() -> None:
    text = box_text([100.0, 50.0, 300.0, 460.0], W, H)
    assert text == "[0.156,0.203,0.469,0.844]"  # padded square: side 640, y offset 80
    back = square_to_pixel(parse_box(text), W, H)
    assert back.tolist() == pytest.approx([100.0, 50.0, 300.0, 460.0], abs=0.5)


def test_render_marks_as_box_text_or_object_images() -> None:
    rec, objects, refs = _record(), [], []
    text = render("Is {o2} next to { o1 } ?", rec, True, objects, refs)
    assert text == "Is <object> next to <object>?"
    assert objects == [rec["objects"][1]["box"], rec["objects"][0]["box"]] and refs == ["o2", "o1"]
    assert render("A man {o1}.", rec, False, [], []) == f"A man {box_text(rec['objects'][0]['box'], W, H)}."
    with pytest.raises(UnknownObjectMark, match="o9"):
        render("{o9}", rec, False, [], [])
    with pytest.raises(UnknownObjectMark, match="reserved"):
        render("look <object> {o1}", rec, True, [], [])


def test_object_families_tokens_boxes_and_answers() -> None:
    rec = _record()
    exprs = families.parse_expressions(
        {"expressions": {"o2": "the dog in the middle", "o3": "the {o1} dog"}}, rec
    )
    # o3's expression contains a mark: refused; "dog" is ambiguous, so o3 gets no words at all
    assert exprs == {"o1": "the man", "o2": "the dog in the middle", "o4": "the ball"}
    shared = {"expressions": {"o1": "The animal", "o2": "the animal", "o4": "a red ball"}}
    # "the animal" fits o1 and o2: o1 falls back to its unique name, o2 ("dog" twice) gets nothing
    assert families.parse_expressions(shared, rec) == {"o1": "the man", "o4": "a red ball"}
    samples = families.object_families(rec, exprs, Templates(), seed=0)
    by_family: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        by_family.setdefault(s["family"], []).append(s)
        assert _object_count(s) == len(s["objects"])
        assert s["conversations"][0]["value"].startswith("<image>\n")
    assert len(by_family["image_to_box"]) == 4 and len(by_family["text_to_box"]) == 3
    for s in by_family["text_to_image"]:
        target = s["refs"][families.OPTION_LETTERS.index(s["conversations"][1]["value"][1])]
        question = s["conversations"][0]["value"]
        assert exprs[target] in question
        # the right option's image is the target's box; distractors never share its name
        names = {o["id"]: o["name"] for o in rec["objects"]}
        assert [names[r] for r in s["refs"]].count(names[target]) == 1
    tb = by_family["text_to_box"][0]
    assert tb["conversations"][1]["value"] == box_text(rec["objects"][0]["box"], W, H)
    # reproducible wording and option order
    assert families.object_families(rec, exprs, Templates(), seed=0) == samples


def test_relation_conversation_description_families() -> None:
    rec = _record()
    qas, dropped = families.relation_qa_family(
        {
            "qas": [
                {"question": "What is {o1} throwing?", "answer": "He throws {o4}."},
                {"question": "no mark", "answer": "x"},
                {"question": "{o7}?", "answer": "x"},
                "junk",
            ]
        },
        rec,
    )
    assert len(qas) == 1 and dropped == 3
    assert qas[0]["objects"] == [rec["objects"][0]["box"]] and qas[0]["refs"] == ["o1", "o4"]
    assert box_text(rec["objects"][3]["box"], W, H) in qas[0]["conversations"][1]["value"]
    conv = families.conversation_family(
        {
            "conversation": [
                {"question": "Who is there?", "answer": "A man {o1}."},
                {"question": "And?", "answer": "A dog {o2}."},
            ]
        },
        rec,
    )
    assert len(conv) == 1 and len(conv[0]["conversations"]) == 4 and conv[0]["objects"] == []
    assert (
        families.conversation_family({"conversation": [{"question": "q", "answer": "no marks"}]}, rec) == []
    )
    with pytest.raises(MalformedAnswer):
        families.conversation_family({"talk": []}, rec)
    desc = families.description_family(
        {"description": "A man {o1} plays with a dog {o2}."}, rec, Templates(), 0
    )
    assert desc[0]["refs"] == ["o1", "o2"]
    with pytest.raises(MalformedAnswer):
        families.description_family({"description": "A cat {o9}."}, rec, Templates(), 0)


def test_parse_relations_keeps_valid_unique_triples() -> None:
    rels, dropped = parse_relations(
        {
            "relations": [
                ["o1", "holding", "o4"],
                ["o1", "holding", "o4"],
                {"subject": "o2", "relation": "near", "object": "o3"},
                ["o1", "on", "o1"],
                ["o1", "on", "o9"],
                ["o1", "o2"],
            ]
        },
        {"o1", "o2", "o3", "o4"},
    )
    assert rels == [["o1", "holding", "o4"], ["o2", "near", "o3"]] and dropped == 4
    with pytest.raises(MalformedAnswer):
        parse_relations({"relations": "none"}, {"o1"})


@pytest.mark.parametrize(
    ("objects", "refs", "text", "reason"),
    [
        ([[100, 50, 300, 460]], ["o1"], "", None),
        ([[10, 10, 14, 14]], ["o4"], "", "object_too_small"),  # 4 px side
        ([[0, 0, 640, 480]], ["o1"], "", "object_too_large"),
        ([[100, 50, 300, 460], [110, 60, 300, 460]], ["o1", "o2"], "", "overlapping_object_images"),
        ([[520, 320, 630, 470]], ["o3"], "", "low_confidence"),
        ([], ["o1"], "[0.1,0.1,0.2,0.2] " * 13, "too_many_boxes"),
        ([[600, 400, 700, 470]], ["o1"], "", "box_outside_image"),
    ],
)
def test_filters(objects: list[list[float]], refs: list[str], text: str, reason: str | None) -> None:
    sample = {
        "family": "x",
        "objects": objects,
        "refs": refs,
        "conversations": [
            {"from": "human", "value": "<image>\nq" + "<object>" * len(objects)},
            {"from": "gpt", "value": text or "a"},
        ],
    }
    assert drop_reason(sample, _record(), FilterSettings(min_score=0.35, max_boxes=12)) == reason


def test_ambiguous_name_filter_and_settings_validation() -> None:
    rec = _record()
    rec["objects"] += [
        {"id": f"o{k}", "name": "dog", "box": [1, 1, 50, 50], "score": 0.9} for k in range(5, 9)
    ]
    sample = {"objects": [], "refs": ["o2"], "conversations": [{"from": "human", "value": "q"}]}
    assert drop_reason(sample, rec, FilterSettings(max_instances=5)) == "ambiguous_name"  # 6 dogs
    assert drop_reason(sample, rec, FilterSettings(max_instances=6)) is None
    with pytest.raises(ValueError, match="--min-object-area"):
        FilterSettings(min_object_area=0.5, max_object_area=0.4)


def _good(root: Path) -> list[dict[str, Any]]:
    Image.new("RGB", (W, H)).save(root / "img.jpg")
    rec = _record()
    sample = families.object_families(rec, {"o1": "the man"}, Templates(), 0)[0]
    return [
        training_sample(rec, 0, sample),
        {
            "id": "b",
            "image": "img.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nhi"},
                {"from": "gpt", "value": "[0.1,0.2,0.3,0.4]"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda s: s[0].update(objects=[]),
            (
                r"sample 0 \(id 'img.jpg#image_to_box#0'\): field 'objects': expected one "
                r"box per <object> token \(1 tokens\), got 0 boxes"
            ),
        ),
        (
            lambda s: s[0].update(objects=[[100, 50, 700, 460]]),
            r"objects\[0\]: box .* lies outside the 640x480 image",
        ),
        (
            lambda s: s[1]["conversations"].reverse(),
            r"sample 1 \(id 'b'\): conversations\[0\]: expected \{'from': 'human'",
        ),
        (lambda s: s[1].update(image="missing.jpg"), r"file .*missing\.jpg does not exist"),
        (
            lambda s: s[1]["conversations"][1].update(value="[0.5,0.2,0.3,1.2]"),
            r"box text 0: expected 0 <= x1 <= x2",
        ),
        (lambda s: s[1]["conversations"][0].update(value="hi"), r"expected 1 <image> token\(s\)"),
        (lambda s: s[1].update(id=s[0]["id"]), r"sample 1: field 'id': .* occurs twice"),
    ],
)
def test_schema_validation_names_sample_field_and_problem(tmp_path: Path, mutate: Any, message: str) -> None:
    samples = _good(tmp_path)
    assert validate_samples(json.loads(json.dumps(samples)), tmp_path, "train.json") == 2
    mutate(samples)
    with pytest.raises(ValueError, match=message):
        validate_samples(samples, tmp_path, "train.json")


def test_prompt_overrides_and_placeholder_errors(tmp_path: Path) -> None:
    (tmp_path / "questions").mkdir()
    (tmp_path / "recognise.txt").write_text("List up to $max_objects things, as JSON.")
    (tmp_path / "questions" / "text_to_box.txt").write_text("Box of $expression?\n\n")
    (tmp_path / "relate.txt").write_text("Relations among $objects and $missing")
    t = Templates(tmp_path)
    assert t.prompt("recognise.txt", max_objects=3) == "List up to 3 things, as JSON."
    assert "Task: grounding description" in t.prompt(
        "qa_description.txt", objects="o1", relations="-"
    )  # shipped
    assert t.question("text_to_box", random.Random(0), expression="the cat") == "Box of the cat?"
    with pytest.raises(KeyError, match=r"relate\.txt: no value given for placeholder \$missing"):
        t.prompt("relate.txt", objects="o1: cat")
    with pytest.raises(KeyError, match=r"box_to_text\.txt: template .* uses \$box"):
        Templates().question("box_to_text", random.Random(0))
    with pytest.raises(FileNotFoundError, match="--prompts"):
        Templates(tmp_path / "nope")
