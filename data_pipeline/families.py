"""The sample families the pipeline produces, built from a grounded image record and the VLM's answers.

Fine-grained grounding (the paper's stage-2 data, Fig. 8/10), one of each per grounded object:

* ``text_to_box``: referring expression -> box text;
* ``box_to_text``: box text -> referring expression;
* ``image_to_box``: object image (``<object>``) -> box text;
* ``text_to_image``: referring expression -> which of 2-4 object-image options (letters);
* ``relation_qa``: the VLM's relation/attribute questions with the marked objects replaced by object
  images (``<object>``), answers grounded with box text.

Global grounding (the paper's stage-3 data, Fig. 9/11/12), one per image:

* ``conversation``: a multi-round grounding conversation, objects grounded with box text;
* ``description``: a detailed image description, objects grounded with box text.

A sample here is ``{"family", "conversations", "objects", "refs"}``; ``objects`` holds the pixel boxes of
its ``<object>`` tokens in order, ``refs`` the ids of every object it uses (for the filters). Question
wording comes from ``prompts/questions/<family>.txt``, chosen with a generator seeded by image, family
and object, so reruns are reproducible.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from data_pipeline.json_repair import MalformedAnswer
from data_pipeline.markup import IMAGE_TOKEN, OBJECT_TOKEN, UnknownObjectMark, box_text, marks, render
from data_pipeline.templates import Templates

FINE_GRAINED = ("text_to_box", "box_to_text", "image_to_box", "text_to_image", "relation_qa")
GLOBAL = ("conversation", "description")
FAMILIES = FINE_GRAINED + GLOBAL
OPTION_LETTERS = "ABCD"


def _sample(
    family: str, turns: list[tuple[str, str]], objects: list[list[float]], refs: list[str]
) -> dict[str, Any]:
    conversations = []
    for k, (question, answer) in enumerate(turns):
        conversations.append({"from": "human", "value": (f"{IMAGE_TOKEN}\n" if k == 0 else "") + question})
        conversations.append({"from": "gpt", "value": answer})
    return {"family": family, "conversations": conversations, "objects": objects, "refs": refs}


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] if text else text


def parse_expressions(value: Any, record: dict[str, Any]) -> dict[str, str]:
    """Referring expressions per object id from the fine-grained answer; names stand in when unique.

    Expressions that carry marks or tokens, or that two objects share, are not used.
    """
    names = [o["name"] for o in record["objects"]]
    given = value.get("expressions") if isinstance(value, dict) else None
    given = given if isinstance(given, dict) else {}
    out: dict[str, str] = {}
    for o in record["objects"]:
        text = given.get(o["id"])
        if isinstance(text, str) and text.strip() and not marks(text) and OBJECT_TOKEN not in text:
            out[o["id"]] = " ".join(text.split())
        elif names.count(o["name"]) == 1:
            out[o["id"]] = f"the {o['name']}"
    # an expression shared by two objects refers to neither: fall back to a unique name, or drop it
    counts = Counter(e.lower() for e in out.values())
    name_of = {o["id"]: o["name"] for o in record["objects"]}
    unique: dict[str, str] = {}
    for oid, expression in out.items():
        if counts[expression.lower()] == 1:
            unique[oid] = expression
        elif names.count(name_of[oid]) == 1:
            unique[oid] = f"the {name_of[oid]}"
    return unique


def object_families(
    record: dict[str, Any], expressions: dict[str, str], templates: Templates, seed: int
) -> list[dict[str, Any]]:
    """text_to_box, box_to_text, image_to_box and text_to_image samples for every grounded object."""
    W, H = record["width"], record["height"]
    samples: list[dict[str, Any]] = []

    def ask(family: str, oid: str, **values: str) -> str:
        rng = random.Random(f"{seed}:{record['image_id']}:{family}:{oid}")
        return templates.question(family, rng, **values)

    for o in record["objects"]:
        btext = box_text(o["box"], W, H)
        samples.append(
            _sample("image_to_box", [(ask("image_to_box", o["id"]), btext)], [list(o["box"])], [o["id"]])
        )
        expression = expressions.get(o["id"])
        if expression is None:
            continue  # an ambiguous name without an expression cannot be asked about in words
        samples.append(
            _sample(
                "text_to_box", [(ask("text_to_box", o["id"], expression=expression), btext)], [], [o["id"]]
            )
        )
        samples.append(
            _sample(
                "box_to_text",
                [(ask("box_to_text", o["id"], box=btext), _sentence(expression) + ".")],
                [],
                [o["id"]],
            )
        )
        r = random.Random(f"{seed}:{record['image_id']}:text_to_image:{o['id']}")
        others = [d for d in record["objects"] if d["id"] != o["id"] and d["name"] != o["name"]]
        if not others:
            continue
        options = r.sample(others, k=min(len(others), len(OPTION_LETTERS) - 1)) + [o]
        r.shuffle(options)
        letters = OPTION_LETTERS[: len(options)]
        option_text = " ".join(f"({letter}) {OBJECT_TOKEN}" for letter in letters)
        answer = f"({letters[options.index(o)]})"
        samples.append(
            _sample(
                "text_to_image",
                [
                    (
                        templates.question("text_to_image", r, expression=expression, options=option_text),
                        answer,
                    )
                ],
                [list(d["box"]) for d in options],
                [d["id"] for d in options],
            )
        )
    return samples


def relation_qa_family(value: Any, record: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """relation_qa samples from the fine-grained answer's ``qas``, and the number of items dropped."""
    qas = value.get("qas") if isinstance(value, dict) else None
    if qas is None:
        return [], 0
    if not isinstance(qas, list):
        raise MalformedAnswer(f'"qas" must be a list, got {type(qas).__name__}')
    samples, dropped = [], 0
    for qa in qas:
        q = qa.get("question") if isinstance(qa, dict) else None
        a = qa.get("answer") if isinstance(qa, dict) else None
        if not (isinstance(q, str) and isinstance(a, str) and marks(q) and a.strip()):
            dropped += 1
            continue
        objects: list[list[float]] = []
        refs: list[str] = []
        try:
            question = render(q, record, True, objects, refs)
            answer = render(a, record, False, objects, refs)
        except UnknownObjectMark:
            dropped += 1
            continue
        samples.append(_sample("relation_qa", [(question, answer)], objects, refs))
    return samples, dropped


def conversation_family(value: Any, record: dict[str, Any]) -> list[dict[str, Any]]:
    """One multi-round grounding conversation (marks -> box text); raises MalformedAnswer if unusable."""
    rounds = value.get("conversation") if isinstance(value, dict) else value
    if not isinstance(rounds, list):
        raise MalformedAnswer('expected {"conversation": [{"question", "answer"}, ...]}')
    turns: list[tuple[str, str]] = []
    refs: list[str] = []
    for item in rounds:
        q = item.get("question") if isinstance(item, dict) else None
        a = item.get("answer") if isinstance(item, dict) else None
        if not (isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip()):
            continue
        try:
            turns.append((render(q, record, False, [], refs), render(a, record, False, [], refs)))
        except UnknownObjectMark:
            continue
    if not turns or not refs:
        return []
    return [_sample("conversation", turns, [], refs)]


def description_family(
    value: Any, record: dict[str, Any], templates: Templates, seed: int
) -> list[dict[str, Any]]:
    """One grounded description (marks -> box text); raises MalformedAnswer if unusable."""
    text = value.get("description") if isinstance(value, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise MalformedAnswer('expected {"description": "..."}')
    refs: list[str] = []
    try:
        answer = render(text, record, False, [], refs)
    except UnknownObjectMark as exc:
        raise MalformedAnswer(str(exc)) from None
    if not refs:
        return []
    question = templates.question("description", random.Random(f"{seed}:{record['image_id']}:description"))
    return [_sample("description", [(question, answer)], [], refs)]
