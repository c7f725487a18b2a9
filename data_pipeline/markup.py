"""How objects are named to the VLM and how its object marks become training text.

The VLM sees each grounded object as ``o3: white cup [x1,y1,x2,y2]`` (box text in the training frame:
normalised to the padded square) and marks the objects it mentions as ``{o3}``. A mark becomes either
the object's box text (grounded answers and descriptions) or an ``<object>`` token whose box is appended
to the sample's ``objects`` list (object-image questions). Marks naming unknown objects make the text
unusable: :class:`UnknownObjectMark` is raised and the item is dropped.
"""

from __future__ import annotations

import re
from typing import Any

from tinygg.boxes import format_box, pixel_to_square

MARK = re.compile(r"\{\s*(o\d+)\s*\}")
OBJECT_TOKEN = "<object>"
IMAGE_TOKEN = "<image>"


class UnknownObjectMark(ValueError):
    pass


def box_text(box: list[float], width: int, height: int) -> str:
    """Pixel box -> the training text ``[x1,y1,x2,y2]`` (padded-square frame, 3 decimals)."""
    return format_box(pixel_to_square(box, width, height))


def objects_listing(record: dict[str, Any]) -> str:
    return "\n".join(
        f"{o['id']}: {o['name']} {box_text(o['box'], record['width'], record['height'])}"
        for o in record["objects"]
    )


def relations_listing(record: dict[str, Any]) -> str:
    rels = record.get("relations") or []
    return "\n".join(f"({s}, {r}, {o})" for s, r, o in rels) if rels else "(none found)"


def marks(text: str) -> list[str]:
    return MARK.findall(text)


def render(
    text: str, record: dict[str, Any], as_object_image: bool, objects: list[list[float]], refs: list[str]
) -> str:
    """Replace ``{oN}`` marks by box text, or by ``<object>`` (appending the box to ``objects``).

    ``refs`` collects the ids of every object used, for the filters.
    """
    if OBJECT_TOKEN in text or IMAGE_TOKEN in text:
        raise UnknownObjectMark(f"the model wrote a reserved token ({OBJECT_TOKEN} or {IMAGE_TOKEN}) itself")
    by_id = {o["id"]: o for o in record["objects"]}

    def replace(match: re.Match[str]) -> str:
        oid = match.group(1)
        if oid not in by_id:
            raise UnknownObjectMark(f"mark {{{oid}}} names no grounded object (known: {sorted(by_id)})")
        refs.append(oid)
        if as_object_image:
            objects.append(list(by_id[oid]["box"]))
            return OBJECT_TOKEN
        return box_text(by_id[oid]["box"], record["width"], record["height"])

    return _tidy(MARK.sub(replace, text))


def _tidy(text: str) -> str:
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r" ([.,;:!?])", r"\1", text).strip()
