"""The resumable predictions record: torn last lines are cut, corrupt middle lines are named, settings guard
against mixing runs, --fresh starts over."""

import json

import pytest

from tinygg.evaluate.journal import Journal, open_run


def test_torn_last_line_is_cut_and_later_rows_win(tmp_path):
    j = Journal(tmp_path / "p.jsonl")
    j.append([{"split": "a", "id": "1", "answer": "x"}, {"split": "a", "id": "2", "answer": "y"}])
    j.append([{"split": "a", "id": "1", "answer": "z"}])
    with open(j.path, "a") as f:
        f.write('{"split": "a", "id": "3", "ans')
    rows = j.load()
    assert set(rows) == {("a", "1"), ("a", "2")} and rows[("a", "1")]["answer"] == "z"
    assert j.path.read_text().endswith("}\n")  # the fragment is gone, so appends start on a fresh line
    j.append([{"split": "a", "id": "3", "answer": "w"}])
    assert set(j.load()) == {("a", "1"), ("a", "2"), ("a", "3")}


def test_corrupt_middle_line_and_missing_key_are_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"split": "a", "id": "1"}\n{oops}\n{"split": "a", "id": "2"}\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        Journal(path).load()
    path.write_text('{"split": "a"}\n')
    with pytest.raises(ValueError, match="line 1: field 'id' is missing"):
        Journal(path).load()


def test_settings_guard_and_fresh(tmp_path):
    j = open_run(tmp_path, {"model": "m1", "prompt": "p"})
    j.append([{"split": "a", "id": "1"}])
    assert json.loads((tmp_path / "run.json").read_text()) == {"model": "m1", "prompt": "p"}
    assert set(open_run(tmp_path, {"model": "m1", "prompt": "p"}).load()) == {("a", "1")}
    with pytest.raises(ValueError, match=r"model: 'm1' -> 'm2'"):
        open_run(tmp_path, {"model": "m2", "prompt": "p"})
    assert open_run(tmp_path, {"model": "m2", "prompt": "p"}, fresh=True).load() == {}


def test_settings_name_files_relative_or_absolute(tmp_path, monkeypatch):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "rows.jsonl").write_text("")
    monkeypatch.chdir(tmp_path)
    open_run(tmp_path / "out", {"model": "ckpt", "data": ["jsonl:rows.jsonl:val"]}).append([{"split": "a", "id": "1"}])
    same = {"model": str(tmp_path / "ckpt"), "data": [f"jsonl:{tmp_path / 'rows.jsonl'}:val"]}
    assert set(open_run("out", same).load()) == {("a", "1")}
    (tmp_path / "other.jsonl").write_text("")
    with pytest.raises(ValueError, match="data: "):
        open_run("out", dict(same, data=["jsonl:other.jsonl:val"]))
    with pytest.raises(ValueError, match="data: "):  # the same file named for another split
        open_run("out", dict(same, data=["jsonl:rows.jsonl:test"]))
