"""DiG pair generation (flat renderer): exact GT boxes, unchanged pixels outside them, determinism,
shards, curriculum sets, resume after a kill, the CLI, and the worker pool's crash retries."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dig.cli import register_dig
from dig.masks import box_region, mask_box
from dig.pairs import PairConfig, generate_pairs, read_pairs, settings_file
from dig.render_blender import RenderError, WorkerPool
from dig.scene import Scene, scene_differences

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"size": (96, 72), "max_objects": 6}


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_flat_pairs_change_only_inside_their_boxes_and_boxes_are_mask_boxes(tmp_path: Path) -> None:
    cfg = PairConfig(out=tmp_path, n=50, difficulty="mixed", zero_diff_fraction=0.15, save_masks=True)
    generate_pairs(cfg, progress=False)
    records = read_pairs(tmp_path)
    assert len(records) == 50
    assert {r["num_differences"] for r in records} == {0, 1, 2, 3, 4}
    kinds = set()
    for rec in records:
        a, b = _load(Path(rec["image_a"])).astype(int), _load(Path(rec["image_b"])).astype(int)
        ma, mb = (_load(tmp_path / "masks" / f"{rec['id']}_{s}.png") for s in "ab")
        sa, sb = Scene.from_dict(rec["scene_a"]), Scene.from_dict(rec["scene_b"])
        assert sorted((c.kind, c.object) for c in scene_differences(sa, sb)) == \
            sorted((c["kind"], c["object"]) for c in rec["changes"])
        changed = np.abs(a - b).sum(-1) > 0  # (H, W)
        # exact: not a single pixel changes outside the union of the boxes (no dilation needed)
        assert not changed[~box_region(rec["boxes"], 128, 96)].any(), rec["id"]
        if not rec["boxes"]:
            assert not changed.any()
        for box, ch in zip(rec["boxes"], rec["changes"]):
            kinds.add(ch["kind"])
            box_a = mask_box(ma, sa.index_of(ch["object"]) + 1) if ch["kind"] != "add" else None
            box_b = mask_box(mb, sb.index_of(ch["object"]) + 1) if ch["kind"] != "delete" else None
            parts = [p for p in (box_a, box_b) if p is not None]
            assert box == [min(p[0] for p in parts), min(p[1] for p in parts),
                           max(p[2] for p in parts), max(p[3] for p in parts)]
            x1, y1, x2, y2 = box
            assert changed[y1:y2, x1:x2].any(), (rec["id"], ch)  # every box holds a visible change
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 96
    assert kinds == {"shape", "color", "size", "material", "add", "delete"}


def test_generation_is_deterministic_across_runs_and_worker_counts(tmp_path: Path) -> None:
    runs = []
    for k, workers in enumerate((1, 1, 2)):
        out = tmp_path / f"run{k}"
        generate_pairs(PairConfig(out=out, n=12, difficulty="dual", workers=workers, **SMALL), progress=False)
        runs.append(_files(out))
    assert runs[0] == runs[1] == runs[2]
    other = tmp_path / "other"
    generate_pairs(PairConfig(out=other, n=12, difficulty="dual", seed=1, **SMALL), progress=False)
    assert _files(other)["pairs.jsonl"] != runs[0]["pairs.jsonl"]


def test_shards_partition_the_ids_and_match_the_full_run(tmp_path: Path) -> None:
    generate_pairs(PairConfig(out=tmp_path / "full", n=10, difficulty="single", **SMALL), progress=False)
    full = {r["id"]: r for r in map(json.loads, (tmp_path / "full" / "pairs.jsonl").read_text().splitlines())}
    seen: list[str] = []
    for i in range(3):
        (path,) = generate_pairs(PairConfig(out=tmp_path / "sharded", n=10, difficulty="single", shard=(i, 3),
                                            **SMALL), progress=False)
        assert path.name == f"pairs-{i:03d}-of-003.jsonl"
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        assert all(int(r["id"].split("_")[1]) % 3 == i for r in recs)
        assert all(r == full[r["id"]] for r in recs)
        seen += [r["id"] for r in recs]
    assert sorted(seen) == sorted(full) and len(seen) == len(set(seen))
    assert [r["id"] for r in read_pairs(tmp_path / "sharded")] == sorted(full)


def test_curriculum_writes_three_sets(tmp_path: Path) -> None:
    paths = generate_pairs(PairConfig(out=tmp_path, n=6, difficulty="curriculum", **SMALL), progress=False)
    assert [p.parent.name for p in paths] == ["single", "dual", "mixed"]
    counts = {p.parent.name: [r["num_differences"] for r in read_pairs(p)] for p in paths}
    assert counts["single"] == [1] * 6 and counts["dual"] == [2] * 6
    assert all(1 <= k <= 4 for k in counts["mixed"])


def test_a_killed_run_resumes_without_duplicates(tmp_path: Path) -> None:
    n = 60
    code = textwrap.dedent(f"""
        from dig.pairs import PairConfig, generate_pairs
        generate_pairs(PairConfig(out={str(tmp_path / 'killed')!r}, n={n}, difficulty="mixed", size=(96, 72),
                                  max_objects=6), progress=False)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    pairs = tmp_path / "killed" / "pairs.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if pairs.exists() and pairs.read_text().count("\n") >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = pairs.read_text().count("\n")
    assert 5 <= written < n, "the run should be killed half-way"
    with open(pairs, "a") as fh:  # as if killed in the middle of a write
        fh.write('{"id": "mixed_0001')
    generate_pairs(PairConfig(out=tmp_path / "killed", n=n, difficulty="mixed", size=(96, 72), max_objects=6),
                   progress=False)
    ids = [json.loads(line)["id"] for line in pairs.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == n
    generate_pairs(PairConfig(out=tmp_path / "whole", n=n, difficulty="mixed", size=(96, 72), max_objects=6),
                   progress=False)
    assert _files(tmp_path / "killed") == _files(tmp_path / "whole")


def test_read_pairs_names_the_bad_line(tmp_path: Path) -> None:
    generate_pairs(PairConfig(out=tmp_path, n=2, **SMALL), progress=False)
    lines = (tmp_path / "pairs.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["boxes"] = "none"
    (tmp_path / "pairs.jsonl").write_text(lines[0] + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(ValueError, match=r"pairs.jsonl: line 2: field 'boxes' should be a list"):
        read_pairs(tmp_path)


def test_cli_generate_sft_writes_warm_start_samples_per_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--sft: every set gets sft.json, one DiG question per pair answered with as many boxes as it has differences,
    its two images found from the sft file's folder."""
    from tinygg.boxes import parse_boxes

    parser = argparse.ArgumentParser(prog="tinygg dig")
    register_dig(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", "--out", str(tmp_path), "--n", "2", "--difficulty", "curriculum",
                              "--size", "96x72", "--sft", "--no-progress"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out.split()
    for name in ("single", "dual", "mixed"):
        sft = tmp_path / name / "sft.json"
        assert str(sft) in printed
        rows, records = json.loads(sft.read_text()), read_pairs(tmp_path / name)
        assert [len(parse_boxes(r["conversations"][1]["value"])) for r in rows] == [len(r["boxes"]) for r in records]
        assert all((sft.parent / img).is_file() for r in rows for img in r["images"])


def test_cli_generate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser(prog="tinygg dig")
    register_dig(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", "--out", str(tmp_path), "--n", "3", "--difficulty", "dual",
                              "--size", "96x72", "--shard", "0/1", "--zero-diff-fraction", "0", "--no-progress"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip().endswith("pairs.jsonl")
    assert len(read_pairs(tmp_path)) == 3
    zoomed = tmp_path / "zoomed"
    args = parser.parse_args(["generate", "--out", str(zoomed), "--n", "3", "--difficulty", "single", "--size",
                              "96x72", "--zoom", "2", "--min-objects", "2", "--max-objects", "4", "--no-progress"])
    assert args.func(args) == 0
    for rec in read_pairs(zoomed):
        a, b = (Scene.from_dict(rec[k]) for k in ("scene_a", "scene_b"))
        assert a.zoom == b.zoom == 2.0 and 2 <= len(a) <= 4 and len(b) <= 4
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--out", "x", "--size", "big"])
    with pytest.raises(ValueError, match="--zoom"):
        PairConfig(out=tmp_path, zoom=0.0)
    same = {"difficulty": "single", "size": (96, 72), "zoom": 2.0, "min_objects": 2, "max_objects": 4}
    generate_pairs(PairConfig(out=zoomed, n=5, **same), progress=False)  # the same settings extend the set
    assert len(read_pairs(zoomed)) == 5
    for other, named in (({"zoom": 1.0}, "zoom 2.0 (now 1.0)"), ({"seed": 5}, "seed 0 (now 5)"),
                         ({"max_objects": 6}, "max_objects 4 (now 6)")):  # no silent mixing of two data sets
        with pytest.raises(ValueError, match=re.escape(f"its 5 pairs were made with {named}")):
            generate_pairs(PairConfig(out=zoomed, n=6, **(same | other)), progress=False)
    settings_file(zoomed / "pairs.jsonl").unlink()  # a file from before the settings record: size and zoom
    with pytest.raises(ValueError, match="zoom 2.0; this run asks for 96x72, zoom 1.0"):
        generate_pairs(PairConfig(out=zoomed, n=4, difficulty="single", size=(96, 72)), progress=False)
    with pytest.raises(ValueError, match="--zero-diff-fraction"):
        PairConfig(out=tmp_path, zero_diff_fraction=2.0)


FAKE_WORKER = """
import json, os, sys
for line in sys.stdin:
    job = json.loads(line)
    if job.get("crash_once") and not os.path.exists(job["crash_once"]):
        open(job["crash_once"], "w").close()
        os._exit(3)
    if job.get("always_crash"):
        os._exit(4)
    if job.get("error"):
        print(json.dumps({"id": job["id"], "ok": False, "error": "boom"}), flush=True)
        continue
    print(json.dumps({"id": job["id"], "ok": True, "pid": os.getpid()}), flush=True)
"""


def test_worker_pool_retries_a_crashed_job_on_a_fresh_worker(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(FAKE_WORKER)
    with WorkerPool([sys.executable, str(script)], workers=2, retries=1, timeout=60, log_dir=tmp_path) as pool:
        crash = pool.submit({"id": "c", "crash_once": str(tmp_path / "marker")})
        doomed = pool.submit({"id": "d", "always_crash": True})
        failing = pool.submit({"id": "e", "error": True})
        fine = [pool.submit({"id": f"f{k}"}) for k in range(6)]
        assert crash.result()["ok"] and (tmp_path / "marker").exists()
        with pytest.raises(RenderError, match="worker died"):
            doomed.result()
        with pytest.raises(RenderError, match="boom"):
            failing.result()
        assert [f.result()["id"] for f in fine] == [f"f{k}" for k in range(6)]
