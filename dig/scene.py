"""CLEVR scene specs: seeded sampling with CLEVR's placement rules, JSON round trip, and edits that give
exactly K differences of six kinds (shape, color, size, material, add, delete).

A scene is pure data (no renderer involved). Objects carry a stable integer ``id`` so that a pair's two
scenes can be compared object by object: :func:`scene_differences` recovers the changes of an edit.

>>> import numpy as np
>>> a = sample_scene(np.random.default_rng(0))
>>> b, changes = edit_scene(a, 2, np.random.default_rng(1))
>>> len(scene_differences(a, b)) == len(changes) == 2
True
>>> Scene.from_json(a.to_json()) == a
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from dig import properties as P
from dig.camera import ground_directions

ATTRIBUTES: tuple[str, ...] = ("shape", "color", "material", "size")
EDIT_KINDS: tuple[str, ...] = ("shape", "color", "size", "material", "add", "delete")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {  # each attribute's possible values
    "shape": P.SHAPES, "color": tuple(P.COLORS), "material": P.MATERIALS, "size": tuple(P.SIZES),
}


@dataclass(frozen=True)
class SceneObject:
    """One CLEVR object standing on the ground plane at ``(x, y)``, rotated ``rotation`` degrees about z."""

    id: int
    shape: str
    color: str
    material: str
    size: str
    x: float
    y: float
    rotation: float

    @property
    def scale(self) -> float:
        """CLEVR's ``r``: footprint radius, sphere/cylinder radius; the object's centre is at z = r."""
        return P.SIZES[self.size]

    @property
    def half_extent(self) -> float:
        """Half the object's height (its centre's z) and half its side along its own x and y axes."""
        return P.cube_half_side(self.scale) if self.shape == "cube" else self.scale

    def corners(self) -> np.ndarray:
        """The 8 corners (8, 3) of the object's bounding box (turned with the object for cubes)."""
        h = self.half_extent
        local = np.array([[sx * h, sy * h, sz * h] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        th = math.radians(self.rotation) if self.shape == "cube" else 0.0
        rot = np.array([[math.cos(th), -math.sin(th), 0.0], [math.sin(th), math.cos(th), 0.0], [0.0, 0.0, 1.0]])
        return local @ rot.T + np.array([self.x, self.y, h])

    def describe(self) -> str:
        return P.describe(self.size, self.color, self.material, self.shape)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "object") -> SceneObject:
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        missing = [f for f in ("id", "shape", "color", "material", "size", "x", "y", "rotation") if f not in d]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        for attr in ATTRIBUTES:
            if d[attr] not in ATTRIBUTE_VALUES[attr]:
                raise ValueError(f"{where}.{attr}: expected one of {list(ATTRIBUTE_VALUES[attr])}, got {d[attr]!r}")
        return cls(id=int(d["id"]), shape=d["shape"], color=d["color"], material=d["material"],
                   size=d["size"], x=float(d["x"]), y=float(d["y"]), rotation=float(d["rotation"]))


@dataclass(frozen=True)
class Scene:
    """An ordered tuple of objects; list position is the object's index in renderer masks (index + 1).

    ``zoom`` frames the camera (``properties.CAMERA_LENS_MM * zoom``; objects were placed within
    ``XY_RANGE / zoom``); JSON leaves it out at CLEVR's 1.0, so older scene files read unchanged."""

    objects: tuple[SceneObject, ...]
    zoom: float = 1.0

    def __post_init__(self) -> None:
        ids = [o.id for o in self.objects]
        if len(set(ids)) != len(ids):
            raise ValueError(f"scene object ids must be unique; got {ids}")
        check_zoom(self.zoom, "scene zoom")

    @property
    def xy_range(self) -> float:
        """Half width of the square that positions are drawn from at this zoom."""
        return P.XY_RANGE / self.zoom

    def __len__(self) -> int:
        return len(self.objects)

    def by_id(self, obj_id: int) -> SceneObject:
        for o in self.objects:
            if o.id == obj_id:
                return o
        raise KeyError(f"no object with id {obj_id} in scene (ids {[o.id for o in self.objects]})")

    def index_of(self, obj_id: int) -> int:
        for i, o in enumerate(self.objects):
            if o.id == obj_id:
                return i
        raise KeyError(f"no object with id {obj_id} in scene (ids {[o.id for o in self.objects]})")

    def next_id(self) -> int:
        return max((o.id for o in self.objects), default=-1) + 1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"objects": [o.to_dict() for o in self.objects]}
        if self.zoom != 1.0:
            d["zoom"] = self.zoom
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "scene") -> Scene:
        if not isinstance(d, dict) or not isinstance(d.get("objects"), list):
            raise ValueError(f"{where}: expected {{\"objects\": [...]}}, got {str(d)[:80]}")
        return cls(tuple(SceneObject.from_dict(o, f"{where}.objects[{i}]") for i, o in enumerate(d["objects"])),
                   zoom=check_zoom(d.get("zoom", 1.0), f"{where}.zoom"))

    @classmethod
    def from_json(cls, text: str, where: str = "scene") -> Scene:
        return cls.from_dict(json.loads(text), where)


@dataclass(frozen=True)
class Change:
    """One difference between a pair's scenes. ``object`` is the object's id; ``before``/``after`` are the
    attribute values (attribute kinds) or the object's description (``add``: before None; ``delete``:
    after None)."""

    kind: str
    object: int
    before: str | None
    after: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Change:
        return cls(kind=d["kind"], object=int(d["object"]), before=d.get("before"), after=d.get("after"))


# ------------------------------------------------------------------------------------------- placement


def _placement_ok(x: float, y: float, r: float, others: Sequence[SceneObject]) -> bool:
    """CLEVR's rules: footprints at least MIN_DIST apart, and no pair closer than MARGIN (but > 0) along
    any of the camera's four ground directions."""
    dirs = ground_directions()
    for o in others:
        dx, dy = x - o.x, y - o.y
        if math.hypot(dx, dy) - r - o.scale < P.MIN_DIST:
            return False
        for vec in dirs.values():
            margin = dx * vec[0] + dy * vec[1]
            if 0 < margin < P.MARGIN:
                return False
    return True


def scene_placement_ok(scene: Scene) -> bool:
    """Whether every pair of objects satisfies the placement rules (used after size edits)."""
    objs = scene.objects
    return all(_placement_ok(o.x, o.y, o.scale, objs[:i]) for i, o in enumerate(objs))


def check_zoom(zoom: Any, name: str) -> float:
    """``zoom`` as a float; ValueError naming ``name`` unless it is a finite positive number."""
    if isinstance(zoom, bool) or not isinstance(zoom, (int, float)) or not (math.isfinite(zoom) and zoom > 0):
        raise ValueError(f"{name}: expected a positive number, got {zoom!r}")
    return float(zoom)


def check_object_counts(min_objects: int, max_objects: int, name: str = "--min-objects/--max-objects") -> None:
    """ValueError naming ``name`` unless 1 <= min_objects <= max_objects."""
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"{name}: need 1 <= min <= max, got {min_objects}/{max_objects}")


def _choose(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def sample_object(rng: np.random.Generator, obj_id: int, others: Sequence[SceneObject],
                  xy_range: float = P.XY_RANGE) -> SceneObject | None:
    """A random object at x, y ~ U(-xy_range, xy_range), placed by CLEVR's rules against ``others``; None
    after MAX_PLACEMENT_TRIES."""
    size = _choose(rng, tuple(P.SIZES))
    r = P.SIZES[size]
    for _ in range(P.MAX_PLACEMENT_TRIES):
        x, y = rng.uniform(-xy_range, xy_range, size=2)
        if _placement_ok(float(x), float(y), r, others):
            break
    else:
        return None
    return SceneObject(id=obj_id, shape=_choose(rng, P.SHAPES), color=_choose(rng, tuple(P.COLORS)),
                       material=_choose(rng, P.MATERIALS), size=size, x=round(float(x), 6),
                       y=round(float(y), 6), rotation=round(float(rng.uniform(0.0, 360.0)), 4))


def sample_scene(rng: np.random.Generator, n_objects: int | None = None, min_objects: int = P.MIN_OBJECTS,
                 max_objects: int = P.MAX_OBJECTS, zoom: float = 1.0) -> Scene:
    """A CLEVR scene of ``n_objects`` (default U{min_objects..max_objects}) framed at ``zoom`` (see
    :class:`Scene`); whole scenes are resampled when an object cannot be placed, as CLEVR does."""
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects; got {min_objects}, {max_objects}")
    n = int(rng.integers(min_objects, max_objects + 1)) if n_objects is None else int(n_objects)
    xy_range = Scene((), zoom).xy_range  # (also checks zoom)
    for _ in range(1000):
        objects: list[SceneObject] = []
        for i in range(n):
            obj = sample_object(rng, i, objects, xy_range)
            if obj is None:
                break
            objects.append(obj)
        else:
            return Scene(tuple(objects), zoom)
    raise RuntimeError(f"could not place {n} objects in 1000 scene attempts (zoom {zoom}: positions within "
                       f"+-{xy_range:g}; fewer objects or a smaller zoom fit)")


# ------------------------------------------------------------------------------------------- edits


def edit_scene(scene: Scene, k: int, rng: np.random.Generator, kinds: Sequence[str] = EDIT_KINDS,
               max_objects: int = P.MAX_OBJECTS, min_objects: int = 1,
               max_tries: int = 200) -> tuple[Scene, list[Change]]:
    """Apply ``k`` edits to ``k`` distinct objects, giving exactly ``k`` differences.

    Each edit's kind is drawn uniformly from ``kinds``. Attribute edits pick a new value different from the
    old one; ``add`` places a new object by CLEVR's rules against every object of both scenes (so it does
    not land where a deleted object stood); size edits keep the placement rules. The edited scene keeps
    between ``min_objects`` and ``max_objects`` objects. Changes are returned in edit order.
    """
    bad = [kd for kd in kinds if kd not in EDIT_KINDS]
    if bad or not kinds:
        raise ValueError(f"edit kinds must be a non-empty subset of {list(EDIT_KINDS)}; got {list(kinds)}")
    if k < 0:
        raise ValueError(f"number of differences must be >= 0; got {k}")
    if k == 0:
        return scene, []
    for _ in range(max_tries):
        chosen = [_choose(rng, tuple(kinds)) for _ in range(k)]
        n_add = chosen.count("add")
        n_existing = k - n_add
        n_after = len(scene) - chosen.count("delete") + n_add
        if n_existing > len(scene) or not min_objects <= n_after <= max_objects:
            continue
        targets = [scene.objects[int(i)] for i in rng.permutation(len(scene))[:n_existing]]
        result = _apply(scene, chosen, targets, rng)
        if result is not None:
            return result
    raise RuntimeError(f"could not make {k} edits of kinds {list(kinds)} to a scene of {len(scene)} objects "
                       f"in {max_tries} tries (max_objects={max_objects}, min_objects={min_objects})")


def _apply(scene: Scene, kinds: list[str], targets: list[SceneObject],
           rng: np.random.Generator) -> tuple[Scene, list[Change]] | None:
    objects = {o.id: o for o in scene.objects}
    order = [o.id for o in scene.objects]
    changes: list[Change] = []
    placed: list[SceneObject] = list(scene.objects)  # everything of both scenes, for add placement
    next_id = scene.next_id()
    it = iter(targets)
    for kind in kinds:
        if kind == "add":
            obj = sample_object(rng, next_id, placed, scene.xy_range)
            if obj is None:
                return None
            next_id += 1
            placed.append(obj)
            objects[obj.id] = obj
            order.append(obj.id)
            changes.append(Change("add", obj.id, None, obj.describe()))
            continue
        target = next(it)
        if kind == "delete":
            del objects[target.id]
            order.remove(target.id)
            changes.append(Change("delete", target.id, target.describe(), None))
            continue
        old = getattr(target, kind)
        new = _choose(rng, tuple(v for v in ATTRIBUTE_VALUES[kind] if v != old))
        objects[target.id] = replace(target, **{kind: new})
        changes.append(Change(kind, target.id, old, new))
    edited = Scene(tuple(objects[i] for i in order), scene.zoom)
    if not scene_placement_ok(edited):
        return None
    return edited, changes


def scene_differences(a: Scene, b: Scene) -> list[Change]:
    """Every difference between two scenes of a pair, by object id (sorted by id, then kind).

    Raises ``ValueError`` if a kept object moved or turned: pairs only differ by the six edit kinds.
    """
    ids_a = {o.id: o for o in a.objects}
    ids_b = {o.id: o for o in b.objects}
    out: list[Change] = []
    for obj_id in sorted(set(ids_a) | set(ids_b)):
        oa, ob = ids_a.get(obj_id), ids_b.get(obj_id)
        if ob is None:
            out.append(Change("delete", obj_id, oa.describe(), None))  # type: ignore[union-attr]
        elif oa is None:
            out.append(Change("add", obj_id, None, ob.describe()))
        else:
            if (oa.x, oa.y, oa.rotation) != (ob.x, ob.y, ob.rotation):
                raise ValueError(f"object {obj_id} moved between the scenes: {oa} -> {ob}")
            out.extend(Change(attr, obj_id, getattr(oa, attr), getattr(ob, attr))
                       for attr in ATTRIBUTES if getattr(oa, attr) != getattr(ob, attr))
    return out
