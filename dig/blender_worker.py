"""A Blender render worker: renders DiG pairs (Cycles images + flat instance-index masks) for
:class:`dig.render_blender.BlenderPool`. Not meant to be run by hand; the pool starts it as::

    python -m dig.blender_worker

Protocol: one JSON job per line on stdin, one JSON reply per line on the *original* stdout (Blender's
own chatter is sent to stderr). A job::

    {"id", "width", "height", "samples", "seed", "threads", "scenes": [scene_a, scene_b],
     "images": [png_a, png_b], "masks": [mask_png_a, mask_png_b], "denoise": bool (default true)}

Renders are bit-identical for the same job without denoising; OpenImageDenoise may move a few pixels by
one 8-bit level between runs.

The reply is ``{"id", "ok": true, "seconds", "device"}`` or ``{"id", "ok": false, "error"}``. Masks are
written as 8-bit PNGs of instance indices (0 = ground, i + 1 = ``scene.objects[i]``) from a Workbench
render with flat lighting, object colours and anti-aliasing off, decoded exactly from a palette.

Geometry matches :mod:`dig.render_flat`: CLEVR sizes (cube half side r/sqrt(2), sphere radius r,
cylinder radius and half height r), objects standing on z = 0, the camera of :mod:`dig.camera`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from typing import Any

import numpy as np

from dig import properties as P
from dig.camera import camera_to_world, look_at
from dig.scene import Scene

PALETTE_LEVELS = 6  # linear levels per channel for mask colours: 6**3 - 1 = 215 objects at most
_SRGB_TOLERANCE = 8  # 8-bit distance allowed between a mask pixel and its palette colour


def palette_linear(index: int) -> tuple[float, float, float]:
    """Linear RGB that encodes instance ``index`` (>= 1) in the mask render."""
    if not 1 <= index < PALETTE_LEVELS ** 3:
        raise ValueError(f"mask palette holds indices 1..{PALETTE_LEVELS ** 3 - 1}; got {index}")
    r, g, b = index % PALETTE_LEVELS, (index // PALETTE_LEVELS) % PALETTE_LEVELS, index // PALETTE_LEVELS ** 2
    return tuple(c / (PALETTE_LEVELS - 1) for c in (r, g, b))  # type: ignore[return-value]


def _srgb8(linear: np.ndarray) -> np.ndarray:
    """sRGB OETF, 8 bit: what the Standard view transform writes for a linear value."""
    x = np.clip(linear, 0.0, 1.0)
    s = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.round(s * 255.0)


def decode_mask(rgba: np.ndarray, n_objects: int) -> np.ndarray:
    """(H, W, 4) uint8 Workbench render -> (H, W) uint8 instance indices; raises if a pixel is off-palette."""
    pal = _srgb8(np.array([palette_linear(i) for i in range(1, n_objects + 1)]))  # (n, 3)
    rgb = rgba[..., :3].astype(np.float64)
    dist = np.abs(rgb[..., None, :] - pal[None, None]).max(axis=-1)  # (H, W, n)
    best = dist.argmin(axis=-1)
    fg = rgba[..., 3] > 127
    bad = fg & (dist.min(axis=-1) > _SRGB_TOLERANCE)
    if bad.any():
        y, x = np.argwhere(bad)[0]
        raise RuntimeError(f"mask pixel ({x},{y}) = {rgba[y, x].tolist()} matches no palette colour "
                           f"({int(bad.sum())} such pixels): the colour management changed?")
    return np.where(fg, best + 1, 0).astype(np.uint8)


class BlenderScene:
    """The fixed studio (ground, lights, camera, world, shape meshes, materials) inside one bpy session."""

    def __init__(self) -> None:
        import bpy  # first: importing bpy makes bmesh and mathutils importable

        # isort: split
        import bmesh

        self.bpy = bpy
        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.scene = bpy.context.scene
        self.device = self._setup_device()
        self._build_world()
        self._build_camera_and_lights()
        self.meshes = self._build_meshes(bmesh)
        self.materials: dict[tuple[str, str], Any] = {}
        self.instances: list[Any] = []

    # -- setup ---------------------------------------------------------------------------------------
    def _setup_device(self) -> str:
        want = os.environ.get("TINYGG_BLENDER_DEVICE", "auto").lower()
        self.scene.render.engine = "CYCLES"
        if want != "cpu":
            try:
                prefs = self.bpy.context.preferences.addons["cycles"].preferences
                for backend in ("OPTIX", "CUDA", "HIP", "ONEAPI", "METAL"):
                    try:
                        prefs.compute_device_type = backend
                    except TypeError:
                        continue
                    prefs.get_devices()
                    devices = [d for d in prefs.devices if d.type == backend]
                    if devices:
                        for d in devices:
                            d.use = True
                        self.scene.cycles.device = "GPU"
                        return backend
            except Exception as exc:  # noqa: BLE001 (no GPU backend in this build: fall back to the CPU)
                print(f"no GPU backend for Cycles ({exc}); rendering on the CPU", file=sys.stderr)
        self.scene.cycles.device = "CPU"
        return "CPU"

    def _build_world(self) -> None:
        bpy = self.bpy
        world = bpy.data.worlds.new("World")
        world.use_nodes = True
        world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.05, 0.05, 1.0)
        self.scene.world = world
        mesh = bpy.data.meshes.new("Ground")
        s = 50.0
        mesh.from_pydata([(-s, -s, 0), (s, -s, 0), (s, s, 0), (-s, s, 0)], [], [(0, 1, 2, 3)])
        self.ground = bpy.data.objects.new("Ground", mesh)
        g = P.GROUND_GRAY
        self.ground.data.materials.append(self._principled("Ground", (g, g, g), metallic=0.0, roughness=0.9))
        self.scene.collection.objects.link(self.ground)

    def _build_camera_and_lights(self) -> None:
        bpy = self.bpy
        from mathutils import Matrix

        cam_data = bpy.data.cameras.new("Camera")
        cam_data.lens = P.CAMERA_LENS_MM  # times each scene's zoom, set in place()
        cam_data.sensor_width = P.CAMERA_SENSOR_WIDTH_MM
        cam_data.sensor_fit = "HORIZONTAL"
        cam = bpy.data.objects.new("Camera", cam_data)
        cam.matrix_world = Matrix(camera_to_world().tolist())
        self.scene.collection.objects.link(cam)
        self.scene.camera = cam
        self.camera_data = cam_data
        self.lights = []
        for name, (loc, power, size) in P.LIGHTS.items():
            data = bpy.data.lights.new(name, type="AREA")
            data.energy = power
            data.size = size
            obj = bpy.data.objects.new(name, data)
            obj.matrix_world = Matrix(look_at(loc, (0.0, 0.0, 0.0)).tolist())
            self.scene.collection.objects.link(obj)
            self.lights.append(obj)

    def _build_meshes(self, bmesh: Any) -> dict[str, Any]:
        """Unit shapes: cube of half side 1, sphere of radius 1, cylinder of radius 1 and half height 1."""
        bpy = self.bpy
        meshes = {}
        for shape in P.SHAPES:
            bm = bmesh.new()
            if shape == "cube":
                bmesh.ops.create_cube(bm, size=2.0)
            elif shape == "sphere":
                bmesh.ops.create_uvsphere(bm, u_segments=64, v_segments=32, radius=1.0)
                for f in bm.faces:
                    f.smooth = True
            else:
                bmesh.ops.create_cone(bm, cap_ends=True, cap_tris=False, segments=64, radius1=1.0,
                                      radius2=1.0, depth=2.0)
                for f in bm.faces:
                    f.smooth = abs(f.normal.z) < 0.5  # smooth side, flat caps
                for e in bm.edges:
                    e.smooth = all(f.smooth for f in e.link_faces)
            mesh = bpy.data.meshes.new(shape)
            bm.to_mesh(mesh)
            bm.free()
            mesh.materials.append(None)
            meshes[shape] = mesh
        return meshes

    def _principled(self, name: str, rgb: tuple[float, float, float], metallic: float, roughness: float) -> Any:
        mat = self.bpy.data.materials.new(name)
        mat.use_nodes = True
        nodes = mat.node_tree.nodes
        bsdf = nodes.get("Principled BSDF")
        if bsdf is None:
            bsdf = nodes.new("ShaderNodeBsdfPrincipled")
            out = nodes.get("Material Output") or nodes.new("ShaderNodeOutputMaterial")
            mat.node_tree.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
        bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
        bsdf.inputs["Metallic"].default_value = metallic
        bsdf.inputs["Roughness"].default_value = roughness
        return mat

    def material(self, color: str, material: str) -> Any:
        key = (color, material)
        if key not in self.materials:
            # CLEVR feeds its 0-255 colours / 255 straight into the shader as linear values.
            rgb = tuple(c / 255.0 for c in P.COLORS[color])
            metal = material == "metal"
            self.materials[key] = self._principled(f"{color}-{material}", rgb, 1.0 if metal else 0.0,
                                                   0.25 if metal else 0.7)
        return self.materials[key]

    # -- per scene -----------------------------------------------------------------------------------
    def place(self, scene: Scene) -> None:
        bpy = self.bpy
        for obj in self.instances:
            bpy.data.objects.remove(obj, do_unlink=True)
        self.instances = []
        self.camera_data.lens = P.CAMERA_LENS_MM * scene.zoom
        for i, o in enumerate(scene.objects):
            inst = bpy.data.objects.new(f"obj{i}", self.meshes[o.shape])
            half = o.half_extent
            inst.scale = (half, half, half)
            inst.location = (o.x, o.y, half)
            inst.rotation_euler = (0.0, 0.0, math.radians(o.rotation))
            inst.color = (*palette_linear(i + 1), 1.0)  # read only by the Workbench mask render
            self.scene.collection.objects.link(inst)
            slot = inst.material_slots[0]  # the shared mesh has one empty slot; the material is per object
            slot.link = "OBJECT"
            slot.material = self.material(o.color, o.material)
            self.instances.append(inst)

    def render_image(self, path: str, width: int, height: int, samples: int, seed: int, threads: int,
                     denoise: bool) -> None:
        sc = self.scene
        sc.render.engine = "CYCLES"
        sc.cycles.samples = samples
        sc.cycles.seed = seed
        sc.cycles.use_animated_seed = False
        sc.cycles.use_adaptive_sampling = False
        sc.cycles.use_denoising = denoise
        sc.render.film_transparent = False
        self.ground.hide_render = False
        self._common(width, height, threads, "RGB")
        sc.render.filepath = path
        self.bpy.ops.render.render(write_still=True)

    def render_mask(self, width: int, height: int, threads: int, tmp_path: str, n_objects: int) -> np.ndarray:
        sc = self.scene
        sc.render.engine = "BLENDER_WORKBENCH"
        shading = sc.display.shading
        shading.light = "FLAT"
        shading.color_type = "OBJECT"
        shading.show_shadows = False
        shading.show_cavity = False
        shading.show_object_outline = False
        shading.show_specular_highlight = False
        shading.show_xray = False
        sc.display.render_aa = "OFF"
        sc.render.film_transparent = True
        self.ground.hide_render = True
        self._common(width, height, threads, "RGBA")
        sc.render.filepath = tmp_path
        self.bpy.ops.render.render(write_still=True)
        from PIL import Image

        rgba = np.asarray(Image.open(tmp_path).convert("RGBA"))
        os.unlink(tmp_path)
        return decode_mask(rgba, n_objects)

    def _common(self, width: int, height: int, threads: int, mode: str) -> None:
        sc = self.scene
        sc.render.resolution_x = width
        sc.render.resolution_y = height
        sc.render.resolution_percentage = 100
        sc.render.threads_mode = "FIXED"
        sc.render.threads = max(1, threads)
        sc.render.dither_intensity = 0.0
        sc.render.image_settings.file_format = "PNG"
        sc.render.image_settings.color_mode = mode
        sc.render.image_settings.color_depth = "8"
        sc.view_settings.view_transform = "Standard"
        sc.view_settings.look = "None"
        sc.view_settings.exposure = 0.0
        sc.view_settings.gamma = 1.0


def render_job(studio: BlenderScene, job: dict[str, Any]) -> None:
    from PIL import Image

    for scene_dict, image, mask_path in zip(job["scenes"], job["images"], job["masks"]):
        scene = Scene.from_dict(scene_dict)
        studio.place(scene)
        tmp = image + ".tmp.png"
        studio.render_image(tmp, job["width"], job["height"], job["samples"], job["seed"], job["threads"],
                            job.get("denoise", True))
        # Re-save through PIL: Blender stamps the date and render time into the PNG, which would make two
        # renders of the same pair differ in bytes.
        with Image.open(tmp) as im:
            im.convert("RGB").save(tmp + ".clean.png")
        os.replace(tmp + ".clean.png", image)
        os.unlink(tmp)
        mask = studio.render_mask(job["width"], job["height"], job["threads"], mask_path + ".rgba.png", len(scene))
        Image.fromarray(mask).save(mask_path + ".tmp.png")
        os.replace(mask_path + ".tmp.png", mask_path)


def main() -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # Blender's prints go to stderr; stdout carries only the protocol
    sys.stdout = sys.stderr
    studio = BlenderScene()
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        start = time.perf_counter()
        try:
            render_job(studio, job)
            reply = {"id": job.get("id"), "ok": True, "seconds": time.perf_counter() - start,
                     "device": studio.device}
        except Exception:  # noqa: BLE001 (reported to the pool, which retries)
            reply = {"id": job.get("id"), "ok": False, "error": traceback.format_exc()}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
