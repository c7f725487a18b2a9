"""The fixed DiG camera: pose, pinhole projection and per-pixel rays, shared by every renderer.

Conventions are Blender's: the camera looks down its local -Z with +Y up; the sensor is fitted
horizontally; pixel ``(u, v)`` has its centre at ``(u + 0.5, v + 0.5)`` with ``v`` growing downwards.
The Blender worker sets ``camera.matrix_world`` from :func:`camera_to_world`, so both renderers see the
same view and the flat renderer's masks predict Blender's.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dig import properties as P


def look_at(location: tuple[float, float, float], target: tuple[float, float, float]) -> np.ndarray:
    """4x4 matrix of an object at ``location`` whose local -Z points at ``target`` with +Y up (Blender's
    convention for cameras and lights; columns: right, up, backward, location)."""
    loc = np.asarray(location, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - loc
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, -forward, loc
    return m


def camera_to_world() -> np.ndarray:
    """4x4 camera-to-world matrix of the DiG camera."""
    return look_at(P.CAMERA_LOCATION, P.CAMERA_TARGET)


def focal_pixels(width: int, zoom: float = 1.0) -> float:
    """Focal length in pixels for an image ``width`` pixels wide (horizontal sensor fit) at a lens of
    ``zoom`` times CAMERA_LENS_MM."""
    return P.CAMERA_LENS_MM * zoom / P.CAMERA_SENSOR_WIDTH_MM * width


@lru_cache(maxsize=1)
def ground_directions() -> dict[str, np.ndarray]:
    """Unit vectors on the ground plane for ``left``, ``right``, ``front``, ``behind`` as CLEVR defines
    them: the camera's left and viewing directions projected onto z = 0 (front = towards the camera)."""
    m = camera_to_world()
    left = -m[:3, 0].copy()
    behind = -m[:3, 2].copy()
    left[2] = 0.0
    behind[2] = 0.0
    left /= np.linalg.norm(left)
    behind /= np.linalg.norm(behind)
    out = {"left": left[:2], "right": -left[:2], "behind": behind[:2], "front": -behind[:2]}
    for v in out.values():
        v.setflags(write=False)
    return out


def project(points: np.ndarray, width: int, height: int, zoom: float = 1.0) -> np.ndarray:
    """World points (N, 3) -> pixel coordinates (N, 2) (continuous, pixel edges at integers)."""
    m = camera_to_world()
    rot, loc = m[:3, :3], m[:3, 3]
    cam = (np.asarray(points, dtype=np.float64) - loc) @ rot  # (N, 3) in camera axes
    f = focal_pixels(width, zoom)
    depth = -cam[:, 2]
    u = width / 2.0 + f * cam[:, 0] / depth
    v = height / 2.0 - f * cam[:, 1] / depth
    return np.stack([u, v], axis=1)


def projected_box(points: np.ndarray, width: int, height: int, zoom: float = 1.0) -> list[float]:
    """Box around the projections of 3-D ``points`` (N, 3), clipped to the image: the loose, occlusion-blind
    box that projecting bounding-box corners gives (compare with the tight mask boxes)."""
    uv = project(points, width, height, zoom)
    x1, y1 = np.clip(uv.min(axis=0), 0, [width, height])
    x2, y2 = np.clip(uv.max(axis=0), 0, [width, height])
    return [float(x1), float(y1), float(x2), float(y2)]


@lru_cache(maxsize=8)
def pixel_rays(width: int, height: int, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Origin (3,) and unit directions (H, W, 3) of the rays through every pixel centre."""
    m = camera_to_world()
    f = focal_pixels(width, zoom)
    u = (np.arange(width) + 0.5 - width / 2.0) / f
    v = -(np.arange(height) + 0.5 - height / 2.0) / f
    uu, vv = np.meshgrid(u, v)  # (H, W)
    cam = np.stack([uu, vv, -np.ones_like(uu)], axis=-1)  # (H, W, 3)
    dirs = cam @ m[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    dirs.setflags(write=False)
    origin = m[:3, 3].copy()
    origin.setflags(write=False)
    return origin, dirs
