import json

import pytest

from tinygg.fileio import write_json, write_jsonl, write_text_atomic


def test_json_round_trip_keeps_non_ascii_and_leaves_no_temporary(tmp_path):
    path = write_json(tmp_path / "a.json", {"caption": "café ☕", "boxes": [[1, 2, 3, 4]]})
    text = path.read_text(encoding="utf-8")
    assert "café ☕" in text and text.endswith("\n")
    assert json.loads(text) == {"caption": "café ☕", "boxes": [[1, 2, 3, 4]]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = write_json(tmp_path / "a.json", [1, 2, 3])
    with pytest.raises(TypeError):
        write_json(path, {"not serialisable": object()})
    assert json.loads(path.read_text()) == [1, 2, 3]
    write_text_atomic(path, "replaced")
    assert path.read_text() == "replaced"


def test_jsonl_one_record_per_line(tmp_path):
    rows = [{"b": 1, "a": 2}, {"id": "x"}]
    path = write_jsonl(tmp_path / "rows.jsonl", rows, sort_keys=True)
    lines = path.read_text().splitlines()
    assert lines == ['{"a": 2, "b": 1}', '{"id": "x"}']
