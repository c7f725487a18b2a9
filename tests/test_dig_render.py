"""The flat ray-cast renderer (masks, tight boxes, determinism) and one small real Blender pair."""

from __future__ import annotations

import importlib.util
import json
import math
import time

import numpy as np
import pytest
from PIL import Image

from dig import properties as P
from dig.camera import focal_pixels, project, projected_box
from dig.masks import box_region, mask_box, visible_counts
from dig.render_flat import render_flat, render_mask
from dig.scene import Scene, SceneObject, sample_scene
from tinygg.boxes import box_iou_aligned


def _one(shape: str, material: str = "rubber", color: str = "red", size: str = "large") -> Scene:
    return Scene((SceneObject(0, shape, color, material, size, 0.0, 0.0, 20.0),))


def test_flat_render_is_deterministic_and_masks_match_the_image() -> None:
    scene = sample_scene(np.random.default_rng(2))
    r1, r2 = render_flat(scene, 128, 96), render_flat(scene, 128, 96)
    assert r1.image.shape == (96, 128, 3) and r1.image.dtype == np.uint8 and r1.mask.shape == (96, 128)
    assert np.array_equal(r1.image, r2.image) and np.array_equal(r1.mask, r2.mask)
    assert np.array_equal(render_mask(scene, 128, 96), r1.mask)
    ground = render_flat(Scene(()), 128, 96).image
    # object pixels are drawn over the ground; ground pixels are exactly the empty scene's
    assert np.array_equal(r1.image[r1.mask == 0], ground[r1.mask == 0])
    assert (np.abs(r1.image.astype(int) - ground).sum(-1)[r1.mask > 0] > 0).mean() > 0.95


def test_sphere_silhouette_has_the_projected_area() -> None:
    w, h = 320, 240
    mask = render_mask(_one("sphere"), w, h)
    dist = math.dist(P.CAMERA_LOCATION, (0, 0, 0.7))
    r_px = focal_pixels(w) * 0.7 / math.sqrt(dist ** 2 - 0.7 ** 2)  # tangent-cone radius at the centre
    assert abs((mask == 1).sum() / (math.pi * r_px ** 2) - 1) < 0.05


def test_zoom_enlarges_objects_and_keeps_them_in_the_frame() -> None:
    w, h = 128, 96
    plain, zoomed = _one("sphere"), Scene(_one("sphere").objects, zoom=2.0)
    area = [int((render_mask(s, w, h) == 1).sum()) for s in (plain, zoomed)]
    assert 3.6 < area[1] / area[0] < 4.4  # twice the size, four times the pixels
    widths = []
    for s in (plain, zoomed):  # the mask box stays inside the projection at the scene's zoom
        box = mask_box(render_mask(s, w, h), 1)
        loose = projected_box(s.objects[0].corners(), w, h, s.zoom)
        assert loose[0] - 1 <= box[0] and loose[1] - 1 <= box[1] and box[2] <= loose[2] + 1 and box[3] <= loose[3] + 1
        widths.append((box[2] - box[0], loose[2] - loose[0]))
    assert abs(widths[1][0] / widths[0][0] - 2) < 0.25 and abs(widths[1][1] / widths[0][1] - 2) < 0.05
    for seed in range(20):  # sampled at zoom 2, every object's centre is still in the frame
        scene = sample_scene(np.random.default_rng(seed), min_objects=2, max_objects=6, zoom=2.0)
        assert scene.zoom == 2.0 and all(abs(o.x) <= 1.5 and abs(o.y) <= 1.5 for o in scene.objects)
        centres = project(np.array([[o.x, o.y, o.half_extent] for o in scene.objects]), w, h, scene.zoom)
        assert ((centres > 0) & (centres < [w, h])).all(), (seed, centres)


def test_shapes_materials_and_sizes_are_distinguishable() -> None:
    w, h = 128, 96
    masks = {s: render_mask(_one(s), w, h) for s in P.SHAPES}
    for a in P.SHAPES:
        for b in P.SHAPES:
            if a < b:
                assert (masks[a] != masks[b]).sum() > 30, (a, b)
    rubber, metal = render_flat(_one("sphere", "rubber"), w, h), render_flat(_one("sphere", "metal"), w, h)
    sel = rubber.mask == 1
    assert np.abs(rubber.image[sel].astype(int) - metal.image[sel]).mean() > 20
    assert metal.image[sel].max() >= 250  # the white highlight
    assert visible_counts(render_mask(_one("cube", size="small"), w, h), 1)[0] * 3 < visible_counts(masks["cube"], 1)[0]


def test_mask_boxes_are_tight_and_inside_projected_corner_boxes() -> None:
    w, h = 160, 120
    ious = []
    for seed in range(10):
        scene = sample_scene(np.random.default_rng(seed))
        mask = render_mask(scene, w, h)
        for i, obj in enumerate(scene.objects):
            box = mask_box(mask, i + 1)
            if box is None:
                continue
            loose = projected_box(obj.corners(), w, h)
            assert loose[0] - 1 <= box[0] and loose[1] - 1 <= box[1] and box[2] <= loose[2] + 1 and box[3] <= loose[3] + 1
            ious.append(float(box_iou_aligned(np.array(box, float), np.array(loose))))
            region = mask == i + 1  # the box is the bounding box of the visible pixels, nothing more
            ys, xs = np.nonzero(region)
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert np.mean(ious) < 0.95  # corner boxes are looser (and blind to occlusion)


def test_box_region_dilates_and_clips() -> None:
    region = box_region([[2, 3, 5, 6]], 10, 8, dilate=1)
    assert region.sum() == 5 * 5 and region[2, 1] and not region[7, 7]
    assert box_region([[0, 0, 10, 8]], 10, 8, dilate=3).all()


@pytest.mark.blender
@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="needs bpy==5.0.1 (the blender extra)")
def test_blender_pair_masks_are_tight_and_changes_stay_in_boxes(tmp_path, monkeypatch) -> None:
    from dig.pairs import PairConfig, generate_pairs, read_pairs

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TINYGG_BLENDER_DEVICE", "cpu")
    w, h = 160, 120
    start = time.perf_counter()
    cfg = PairConfig(out=tmp_path / "b", n=2, difficulty="mixed", renderer="blender", size=(w, h), samples=4,
                     save_masks=True, denoise=False)
    generate_pairs(cfg, progress=False)
    seconds = time.perf_counter() - start
    records = read_pairs(tmp_path / "b")
    assert [r["id"] for r in records] == ["mixed_000000", "mixed_000001"]
    changed_outside = []
    for rec in records:
        a = np.asarray(Image.open(rec["image_a"]).convert("RGB")).astype(int)
        b = np.asarray(Image.open(rec["image_b"]).convert("RGB")).astype(int)
        assert a.shape == (h, w, 3)
        masks = [np.asarray(Image.open(tmp_path / "b" / "masks" / f"{rec['id']}_{s}.png")) for s in "ab"]
        for scene_key, mask in zip(("scene_a", "scene_b"), masks):
            scene = Scene.from_dict(rec[scene_key])
            flat = render_mask(scene, w, h)
            assert (mask == flat).mean() > 0.99  # Blender's geometry and camera are the flat renderer's
            for i in range(len(scene)):
                mb, fb = mask_box(mask, i + 1), mask_box(flat, i + 1)
                assert mb is not None and np.abs(np.subtract(mb, fb)).max() <= 1
        for box, ch in zip(rec["boxes"], rec["changes"]):
            parts = []
            if ch["kind"] != "add":
                parts.append(mask_box(masks[0], Scene.from_dict(rec["scene_a"]).index_of(ch["object"]) + 1))
            if ch["kind"] != "delete":
                parts.append(mask_box(masks[1], Scene.from_dict(rec["scene_b"]).index_of(ch["object"]) + 1))
            assert box == [min(p[0] for p in parts), min(p[1] for p in parts),
                           max(p[2] for p in parts), max(p[3] for p in parts)]
        outside = ~box_region(rec["boxes"], w, h, dilate=3)
        diff = np.abs(a - b).max(-1) > 8
        changed_outside.append(float(diff[outside].mean()))
    print(json.dumps({"blender_test_seconds": round(seconds, 1), "changed_fraction_outside_boxes": changed_outside}))
    assert max(changed_outside) < 0.25  # shadows and reflections only (reported above)
    # deterministic for a seed: the same pair rendered again by a fresh worker is bit-identical (without
    # denoising; OpenImageDenoise may move a few pixels by one level)
    again = PairConfig(out=tmp_path / "again", n=1, difficulty="mixed", renderer="blender", size=(w, h), samples=4,
                       denoise=False)
    generate_pairs(again, progress=False)
    assert (tmp_path / "again" / "images" / "mixed_000000_a.png").read_bytes() == \
        (tmp_path / "b" / "images" / "mixed_000000_a.png").read_bytes()
