"""CLEVR scene sampling, edits with exactly K differences, JSON round trips and the shared camera."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dig import properties as P
from dig.camera import ground_directions, project
from dig.scene import (
    EDIT_KINDS,
    Change,
    Scene,
    SceneObject,
    edit_scene,
    sample_scene,
    scene_differences,
    scene_placement_ok,
)


def test_sampled_scenes_follow_clevr_rules() -> None:
    dirs = ground_directions()
    for seed in range(30):
        scene = sample_scene(np.random.default_rng(seed))
        assert P.MIN_OBJECTS <= len(scene) <= P.MAX_OBJECTS
        assert scene_placement_ok(scene)
        for i, a in enumerate(scene.objects):
            assert -3 <= a.x <= 3 and -3 <= a.y <= 3
            assert a.shape in P.SHAPES and a.color in P.COLORS and a.material in P.MATERIALS and a.size in P.SIZES
            for b in scene.objects[:i]:
                assert math.hypot(a.x - b.x, a.y - b.y) - a.scale - b.scale >= P.MIN_DIST
                for vec in dirs.values():
                    margin = (a.x - b.x) * vec[0] + (a.y - b.y) * vec[1]
                    assert not 0 < margin < P.MARGIN


def test_zoom_round_trips_and_edits_keep_it() -> None:
    a = sample_scene(np.random.default_rng(3), n_objects=4, zoom=2.0)
    assert Scene.from_json(a.to_json()) == a and json.loads(a.to_json())["zoom"] == 2.0
    plain = sample_scene(np.random.default_rng(3), n_objects=4)
    assert "zoom" not in plain.to_dict()  # CLEVR's framing: scene files read and write as before
    b, changes = edit_scene(a, 3, np.random.default_rng(4), kinds=("add", "color"))
    assert b.zoom == 2.0 and len(changes) == 3
    assert all(abs(o.x) <= a.xy_range and abs(o.y) <= a.xy_range for o in b.objects)
    with pytest.raises(ValueError, match="scene.zoom"):
        Scene.from_dict({"objects": [], "zoom": 0})
    with pytest.raises(ValueError, match="zoom"):
        sample_scene(np.random.default_rng(0), zoom=-1.0)


def test_sampling_is_deterministic_for_a_seed() -> None:
    a = sample_scene(np.random.default_rng(5))
    assert a == sample_scene(np.random.default_rng(5))
    assert a != sample_scene(np.random.default_rng(6))


@pytest.mark.parametrize("kind", EDIT_KINDS)
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_each_edit_kind_gives_exactly_k_differences(kind: str, k: int) -> None:
    for seed in range(8):
        a = sample_scene(np.random.default_rng(seed), n_objects=6)
        b, changes = edit_scene(a, k, np.random.default_rng(100 + seed), kinds=(kind,))
        diffs = scene_differences(a, b)
        assert len(diffs) == k
        assert {d.kind for d in diffs} == {kind}
        assert len({d.object for d in diffs}) == k  # k distinct objects
        assert sorted(diffs, key=lambda c: c.object) == sorted(changes, key=lambda c: c.object)
        assert scene_placement_ok(b)
        expected_len = len(a) + (k if kind == "add" else -k if kind == "delete" else 0)
        assert len(b) == expected_len


def test_mixed_edits_and_zero_differences() -> None:
    rng = np.random.default_rng(0)
    for seed in range(40):
        a = sample_scene(np.random.default_rng(seed))
        k = int(rng.integers(0, 5))
        b, changes = edit_scene(a, k, rng)
        assert len(scene_differences(a, b)) == len(changes) == k
    a = sample_scene(np.random.default_rng(1))
    assert edit_scene(a, 0, rng) == (a, [])


def test_added_objects_avoid_deleted_ones() -> None:
    for seed in range(20):
        a = sample_scene(np.random.default_rng(seed), n_objects=5)
        b, _ = edit_scene(a, 4, np.random.default_rng(seed), kinds=("add", "delete"))
        union = {o.id: o for o in a.objects + b.objects}
        assert scene_placement_ok(Scene(tuple(union.values())))


def test_impossible_edits_raise() -> None:
    a = sample_scene(np.random.default_rng(0), n_objects=3)
    with pytest.raises(RuntimeError, match="could not make 4 edits"):
        edit_scene(a, 4, np.random.default_rng(0), kinds=("delete",), max_tries=20)
    with pytest.raises(ValueError, match="subset of"):
        edit_scene(a, 1, np.random.default_rng(0), kinds=("move",))


def test_json_round_trip_and_errors() -> None:
    scene = sample_scene(np.random.default_rng(3))
    assert Scene.from_json(scene.to_json()) == scene
    _, changes = edit_scene(scene, 3, np.random.default_rng(4))
    assert [Change.from_dict(c.to_dict()) for c in changes] == changes
    bad = scene.to_dict()
    bad["objects"][1]["color"] = "pink"
    with pytest.raises(ValueError, match=r"scene.objects\[1\].color: expected one of .*'pink'"):
        Scene.from_dict(bad)
    del bad["objects"][0]["x"]
    with pytest.raises(ValueError, match=r"objects\[0\]: missing field\(s\) \['x'\]"):
        Scene.from_dict(bad)


def test_moved_objects_are_not_a_valid_difference() -> None:
    o = SceneObject(0, "cube", "red", "metal", "large", 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="moved"):
        scene_differences(Scene((o,)), Scene((SceneObject(0, "cube", "red", "metal", "large", 1.0, 0.0, 0.0),)))


def test_camera_looks_at_the_origin_and_left_is_image_left() -> None:
    uv = project(np.array([[0.0, 0.0, 0.0]]), 320, 240)[0]
    assert np.allclose(uv, [160, 120])
    dirs = ground_directions()
    assert np.isclose(np.dot(dirs["left"], dirs["behind"]), 0.0, atol=1e-9)
    left, right = project(np.array([[*dirs["left"], 0.0], [*dirs["right"], 0.0]]), 320, 240)
    front, behind = project(np.array([[*dirs["front"], 0.0], [*dirs["behind"], 0.0]]), 320, 240)
    assert left[0] < 160 < right[0]
    assert behind[1] < 120 < front[1]  # farther objects appear higher in the image
