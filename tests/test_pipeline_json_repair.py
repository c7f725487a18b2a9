"""Repair and rejection of malformed JSON answers from the VLM."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_pipeline.json_repair import MalformedAnswer, parse_json_answer


@pytest.mark.parametrize(
    ("text", "value", "repaired"),
    [
        ('{"objects": ["cat"]}', {"objects": ["cat"]}, False),
        ('```json\n{"objects": ["cat", "dog",]}\n```', {"objects": ["cat", "dog"]}, True),
        ("```\n[1, 2]\n```", [1, 2], True),
        (
            'Sure! Here is the list: {"relations": [["o1", "on", "o2"]]} Let me know.',
            {"relations": [["o1", "on", "o2"]]},
            True,
        ),
        ("{'objects': ['cat', 'dog'], 'ok': True}", {"objects": ["cat", "dog"], "ok": True}, True),
        ('{"a": {"b": [1, 2,],},}', {"a": {"b": [1, 2]}}, True),
        ('text with a stray ] bracket then {"x": "a } inside a string"}', {"x": "a } inside a string"}, True),
        ('first [broken then {"good": 1}', {"good": 1}, True),
    ],
)
def test_repairs(text: str, value: object, repaired: bool) -> None:
    parsed = parse_json_answer(text)
    assert parsed.value == value
    assert parsed.repaired is repaired


@pytest.mark.parametrize(
    "text",
    ["", "   ", "I cannot help with that.", '{"objects": ["cat"', "42", '"just a string"', "{{{", "[1, 2"],
)
def test_rejects(text: str) -> None:
    with pytest.raises(MalformedAnswer):
        parse_json_answer(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(
        st.lists(json_values, max_size=4), st.dictionaries(st.text(max_size=5), json_values, max_size=4)
    ),
    prefix=st.sampled_from(["", "Here you go: ", "```json\n"]),
    suffix=st.sampled_from(["", " Hope it helps!", "\n```"]),
)
def test_any_wrapped_json_container_round_trips(value: object, prefix: str, suffix: str) -> None:
    import json

    assert parse_json_answer(prefix + json.dumps(value) + suffix).value == value
