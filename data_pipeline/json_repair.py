"""Turn a VLM's answer into JSON: parse it as is, or repair the usual defects, or reject it.

Chat models asked for JSON often wrap it in Markdown code fences, add a sentence before or after it,
leave trailing commas, use Python literals (``True``/``None``/single quotes), or stop in the middle of
the text. :func:`parse_json_answer` tries, in order: the text as is; the text with fences stripped;
the first balanced JSON array/object found in it; each of those with trailing commas removed and
Python literals mapped to JSON. The first candidate that parses wins. When none does, it raises
:class:`MalformedAnswer`, which the caller counts as a rejected answer.

>>> parse_json_answer('```json\\n{"objects": ["cat", "dog",]}\\n```').value
{'objects': ['cat', 'dog']}
>>> parse_json_answer('Sure! Here they are: ["a", "b"] Hope this helps.').repaired
True
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([\]}])")


class MalformedAnswer(ValueError):
    """The answer holds no JSON value that can be recovered."""


@dataclass(frozen=True)
class ParsedAnswer:
    value: Any
    repaired: bool  # False when the raw text was already valid JSON


def _first_balanced(text: str) -> str | None:
    """The first balanced ``[...]`` or ``{...}`` in ``text`` (brackets inside strings ignored)."""
    for start, ch in enumerate(text):
        if ch not in "[{":
            continue
        stack: list[str] = []
        in_string = False
        escape = False
        for end in range(start, len(text)):
            c = text[end]
            if in_string:
                if escape:
                    escape = False
                elif c == "\\":
                    escape = True
                elif c == '"':
                    in_string = False
                continue
            if c == '"':
                in_string = True
            elif c in "[{":
                stack.append("]" if c == "[" else "}")
            elif c in "]}":
                if not stack or stack.pop() != c:
                    break
                if not stack:
                    return text[start : end + 1]
        # unbalanced from this start: try the next opening bracket
    return None


def _container(value: Any, candidate: str) -> Any:
    if not isinstance(value, (list, dict)):
        raise MalformedAnswer(f"not a JSON array or object: {candidate[:80]!r}")
    return value


def _loads_lenient(candidate: str) -> Any:
    """json.loads, then json with trailing commas removed, then a Python literal (single quotes, True)."""
    for text in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
        try:
            return _container(json.loads(text), candidate)
        except json.JSONDecodeError:
            pass
    try:
        value = _container(ast.literal_eval(_TRAILING_COMMA.sub(r"\1", candidate)), candidate)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise MalformedAnswer(f"not JSON: {candidate[:80]!r}") from None
    # round-trip so tuples/sets become JSON-compatible containers, or fail
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise MalformedAnswer(f"holds values JSON cannot represent: {candidate[:80]!r}") from None


def parse_json_answer(text: str) -> ParsedAnswer:
    """Parse a model answer into a JSON array/object, repairing it if needed (see module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise MalformedAnswer("empty answer")
    stripped = text.strip()
    try:
        value = json.loads(stripped)
        if isinstance(value, (list, dict)):
            return ParsedAnswer(value, repaired=False)
    except json.JSONDecodeError:
        pass
    candidates: list[str] = []
    for fence in _FENCE.finditer(stripped):
        candidates.append(fence.group(1).strip())
        # scanned from the fence's start through the rest of the text: a ``` inside a JSON string ends the
        # regex's match early, but not a string-aware bracket scan
        inner = _first_balanced(stripped[fence.start(1):])
        if inner:
            candidates.append(inner)
    balanced = _first_balanced(stripped)
    if balanced:
        candidates.append(balanced)
    candidates.append(stripped)
    for candidate in candidates:
        try:
            return ParsedAnswer(_loads_lenient(candidate), repaired=True)
        except MalformedAnswer:
            continue
    raise MalformedAnswer(f"no JSON array or object could be recovered from: {stripped[:120]!r}")
