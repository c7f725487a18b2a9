"""CLEVR's object properties, placement rules, camera and lights: the one source of truth for DiG scenes.

Values follow facebookresearch/clevr-dataset-gen (``data/properties.json`` and ``render_images.py``
defaults); the light positions and strengths are this project's choice (CLEVR keeps them inside its
``base_scene.blend``), picked to give CLEVR's look: a key light from the front left, a weaker fill from
the right and a back light for rims. Every renderer (flat and Blender), the scene sampler and the
synthetic grounding corpus read these names; do not copy the numbers elsewhere.
"""

from __future__ import annotations

import math

#: Shapes, in a fixed order (an object's ``shape`` is one of these names).
SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder")

#: The eight CLEVR colours as sRGB 0-255 triples.
COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}

MATERIALS: tuple[str, ...] = ("rubber", "metal")

#: Size name -> CLEVR's scale ``r``: a sphere's radius, a cylinder's radius and half height; a cube's
#: half side is ``r / sqrt(2)`` (CLEVR shrinks cubes so that they do not look bigger than spheres).
SIZES: dict[str, float] = {"large": 0.7, "small": 0.35}

#: Scene sampling (CLEVR ``render_images.py`` defaults).
MIN_OBJECTS = 3
MAX_OBJECTS = 10
XY_RANGE = 3.0  # x, y ~ U(-3, 3)
MIN_DIST = 0.25  # min gap between two objects' footprints (centre distance minus both radii)
MARGIN = 0.4  # min separation along the camera's left/right/front/behind directions
MAX_PLACEMENT_TRIES = 50  # tries for one object before the whole scene is resampled
#: CLEVR's visibility check: every object covers at least this many pixels at 320x240; other sizes scale
#: it by their pixel count (see :func:`min_visible_pixels`).
MIN_PIXELS_AT_320x240 = 200

#: Camera: CLEVR's base scene (about (7.48, -6.51, 5.34), looking at the origin), Blender's default lens.
CAMERA_LOCATION: tuple[float, float, float] = (7.48, -6.51, 5.34)
CAMERA_TARGET: tuple[float, float, float] = (0.0, 0.0, 0.0)
CAMERA_LENS_MM = 35.0
CAMERA_SENSOR_WIDTH_MM = 32.0  # fitted horizontally
#: A scene's ``zoom`` z (default 1, CLEVR's framing) multiplies the lens and divides XY_RANGE: objects look z
#: times larger and every position still lands in the frame. At z = 2 a small object covers about one 8 px patch
#: of the tiny model's 64 px view (measured, not the shipped demo plan: docs/demo_recipe.md, section 9).

#: Lights (area lights in Blender, directions in the flat renderer): name -> (location, power in W, size).
LIGHTS: dict[str, tuple[tuple[float, float, float], float, float]] = {
    "key": ((6.4, 2.9, 6.5), 450.0, 3.0),
    "fill": ((-4.7, -4.6, 3.8), 120.0, 3.0),
    "back": ((-1.2, 6.7, 5.0), 250.0, 3.0),
}

GROUND_GRAY = 0.5  # linear albedo of the ground plane

#: Default image size (CLEVR's code default) and the small default the CPU demo trains on.
CLEVR_SIZE: tuple[int, int] = (320, 240)
DEMO_SIZE: tuple[int, int] = (128, 96)


def cube_half_side(r: float) -> float:
    """Half side of a CLEVR cube of scale ``r``."""
    return r / math.sqrt(2.0)


def min_visible_pixels(width: int, height: int) -> int:
    """CLEVR's 200-pixel visibility threshold scaled to a ``width x height`` image (at least 4)."""
    return max(4, round(MIN_PIXELS_AT_320x240 * width * height / (CLEVR_SIZE[0] * CLEVR_SIZE[1])))


def describe(size: str, color: str, material: str, shape: str) -> str:
    """``"small red metal cube"``: the words used in change records and referring expressions."""
    return f"{size} {color} {material} {shape}"
