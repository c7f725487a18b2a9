"""The flat renderer: a fast, deterministic numpy ray caster of DiG scenes (no shadows, no reflections
between objects, no anti-aliasing), for tests, the CPU demo and the synthetic grounding corpus.

Every pixel's colour depends only on the first surface its ray hits (an object or the ground), so two
renders of a pair differ exactly on the pixels where a changed object is visible in one of the images:
pixels outside the pair's ground-truth boxes are bit-identical. The same pass gives an instance-index
mask (0 = ground, i + 1 = ``scene.objects[i]``), from which tight, occlusion-aware boxes are read.

Shapes: exact ray intersections with spheres, rotated cubes and capped cylinders at CLEVR's sizes and
the shared camera (:mod:`dig.camera`), so masks match Blender's up to pixel sampling. Rubber is Lambert
shaded; metal is darker with an environment reflection and a white highlight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dig import properties as P
from dig.camera import pixel_rays
from dig.scene import Scene, SceneObject

_INF = np.inf


def _light_dirs() -> dict[str, np.ndarray]:
    return {name: np.asarray(loc) / np.linalg.norm(loc) for name, (loc, _, _) in P.LIGHTS.items()}


_LIGHTS = _light_dirs()
_LIGHT_WEIGHTS = {"key": 0.75, "fill": 0.3, "back": 0.15}


@dataclass
class FlatRender:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8: 0 ground, i + 1 = scene.objects[i]


def _bounding_radius(obj: SceneObject) -> float:
    return obj.half_extent * {"cube": np.sqrt(3.0), "cylinder": np.sqrt(2.0), "sphere": 1.0}[obj.shape]


def _center(obj: SceneObject) -> np.ndarray:
    return np.array([obj.x, obj.y, obj.half_extent])


def _intersect(obj: SceneObject, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hit distance (N,) (inf on a miss) and world normals (N, 3) of rays ``dirs`` (N, 3) from ``origin``."""
    n = len(dirs)
    t = np.full(n, _INF)
    normals = np.zeros((n, 3))
    c = _center(obj)
    oc = origin - c
    # Cheap bounding-sphere cull, then the exact shape on the surviving rays.
    b = dirs @ oc  # (N,)
    disc = b * b - (oc @ oc - _bounding_radius(obj) ** 2)
    cand = np.nonzero(disc >= 0)[0]
    if len(cand) == 0:
        return t, normals
    d = dirs[cand]
    r = obj.scale
    with np.errstate(divide="ignore", invalid="ignore"):
        if obj.shape == "sphere":
            tc = -b[cand] - np.sqrt(disc[cand])
            ok = tc > 0
            hit_n = (origin + tc[:, None] * d - c) / r
        elif obj.shape == "cube":
            h = obj.half_extent
            th = np.deg2rad(obj.rotation)
            rot = np.array([[np.cos(th), -np.sin(th), 0.0], [np.sin(th), np.cos(th), 0.0], [0.0, 0.0, 1.0]])
            lo = rot.T @ oc  # (3,) ray origin in the cube's frame
            ld = d @ rot  # (M, 3) directions in the cube's frame
            t1 = (-h - lo) / ld
            t2 = (h - lo) / ld
            tnear = np.minimum(t1, t2)
            tfar = np.maximum(t1, t2)
            tc = np.nanmax(tnear, axis=1)
            tmax = np.nanmin(tfar, axis=1)
            ok = (tmax >= tc) & (tc > 0)
            axis = np.nanargmax(tnear, axis=1)
            local_n = np.zeros_like(ld)
            rows = np.arange(len(ld))
            local_n[rows, axis] = -np.sign(ld[rows, axis])
            hit_n = local_n @ rot.T
        else:  # cylinder: radius r, half height r, axis z
            hh = r
            a = d[:, 0] ** 2 + d[:, 1] ** 2
            bb = 2 * (oc[0] * d[:, 0] + oc[1] * d[:, 1])
            cc = oc[0] ** 2 + oc[1] ** 2 - r * r
            dd = bb * bb - 4 * a * cc
            t_side = (-bb - np.sqrt(dd)) / (2 * a)
            z_side = oc[2] + t_side * d[:, 2]
            t_side = np.where((dd >= 0) & (np.abs(z_side) <= hh) & (t_side > 0), t_side, _INF)
            t_caps = []
            for zc in (hh, -hh):
                tcap = (zc - oc[2]) / d[:, 2]
                px = oc[0] + tcap * d[:, 0]
                py = oc[1] + tcap * d[:, 1]
                t_caps.append(np.where((px * px + py * py <= r * r) & (tcap > 0), tcap, _INF))
            stack = np.stack([t_side, t_caps[0], t_caps[1]], axis=1)
            which = np.argmin(stack, axis=1)
            tc = stack[np.arange(len(stack)), which]
            ok = np.isfinite(tc)
            p = oc + np.where(ok, tc, 0.0)[:, None] * d
            hit_n = np.zeros_like(d)
            hit_n[:, 0] = np.where(which == 0, p[:, 0] / r, 0.0)
            hit_n[:, 1] = np.where(which == 0, p[:, 1] / r, 0.0)
            hit_n[:, 2] = np.where(which == 1, 1.0, np.where(which == 2, -1.0, 0.0))
    ok &= np.isfinite(tc)
    t[cand[ok]] = tc[ok]
    normals[cand[ok]] = hit_n[ok]
    return t, normals


def raycast(scene: Scene, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Instance-index mask (H, W) uint8 and hit normals (H, W, 3) of the first object hit per pixel."""
    if len(scene) > 254:
        raise ValueError(f"the flat renderer's uint8 mask holds at most 254 objects; got {len(scene)}")
    origin, dirs = pixel_rays(width, height, scene.zoom)
    flat_dirs = dirs.reshape(-1, 3)  # (N, 3)
    best_t = np.full(len(flat_dirs), _INF)
    index = np.zeros(len(flat_dirs), dtype=np.uint8)
    normals = np.zeros((len(flat_dirs), 3))
    for i, obj in enumerate(scene.objects):
        t, nrm = _intersect(obj, origin, flat_dirs)
        closer = t < best_t
        best_t[closer] = t[closer]
        index[closer] = i + 1
        normals[closer] = nrm[closer]
    return index.reshape(height, width), normals.reshape(height, width, 3)


def render_mask(scene: Scene, width: int, height: int) -> np.ndarray:
    """Only the instance-index mask (H, W) uint8 (0 = ground, i + 1 = ``scene.objects[i]``)."""
    return raycast(scene, width, height)[0]


def _ground(width: int, height: int, zoom: float) -> np.ndarray:
    """The ground's colour per pixel (H, W, 3), float in [0, 1]: gray, a little darker far away."""
    origin, dirs = pixel_rays(width, height, zoom)
    t = -origin[2] / np.minimum(dirs[..., 2], -1e-6)  # (H, W)
    p = origin + t[..., None] * dirs
    dist = np.hypot(p[..., 0], p[..., 1])
    g = np.clip(0.62 - 0.012 * dist, 0.35, 0.62)
    return np.repeat(g[..., None], 3, axis=-1) * np.array([1.0, 0.99, 0.97])


def render_flat(scene: Scene, width: int, height: int) -> FlatRender:
    """Render ``scene`` at ``width x height``: image (H, W, 3) uint8 and instance-index mask (H, W)."""
    mask, normals = raycast(scene, width, height)
    _, dirs = pixel_rays(width, height, scene.zoom)
    out = _ground(width, height, scene.zoom)
    diffuse = sum(w * np.clip(normals @ _LIGHTS[name], 0.0, None) for name, w in _LIGHT_WEIGHTS.items())
    half = _LIGHTS["key"] - dirs
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    spec = np.clip(np.sum(normals * half, axis=-1), 0.0, None) ** 12  # (H, W)
    refl = dirs - 2 * np.sum(dirs * normals, axis=-1, keepdims=True) * normals
    # A mirror of a studio: dark surroundings, a big soft window towards the key light, a dim sky.
    env = 0.08 + 1.3 * np.clip(refl @ _LIGHTS["key"], 0.0, None) ** 6 + 0.35 * np.clip(refl[..., 2], 0.0, None)
    for i, obj in enumerate(scene.objects):
        sel = mask == i + 1
        if not sel.any():
            continue
        base = np.asarray(P.COLORS[obj.color], dtype=np.float64) / 255.0
        if obj.material == "metal":
            col = base * (0.1 + 0.2 * diffuse[sel] + env[sel])[:, None] + 0.5 * spec[sel][:, None]
        else:
            col = base * (0.3 + 0.75 * diffuse[sel])[:, None]
        out[sel] = col
    image = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return FlatRender(image=image, mask=mask)
