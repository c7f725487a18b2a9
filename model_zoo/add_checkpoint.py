"""Register a checkpoint directory in the user registry (``tinygg zoo add NAME --from DIR``).

Every file of the directory (hidden files and pickle weights excepted) is hashed; the entry records
the sha256 and size of each, the preset, stage, parent and metrics, and where the files can be fetched:
the directory itself (``local``, the default), a base URL where they will be uploaded (``url``), or a
Hugging Face repository at a pinned revision (``hf``).

A directory inside the ``model_zoo`` package is recorded as ``package://...``, so a checkpoint shipped in
the wheel is registered in the shipped registry with::

    tinygg zoo add tinygg-tiny-demo --from model_zoo/checkpoints/tinygg-tiny-demo --preset tiny \
        --stage stage3 --eval runs/demo/metrics.json --registry model_zoo/registry.yaml
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .integrity import list_model_files, refuse_pickle_checkpoint, sha256_file
from .model_card import metrics_from_eval
from .registry import (
    PACKAGE_DIR,
    PACKAGE_SCHEME,
    SHIPPED_REGISTRY,
    Entry,
    RegistryError,
    is_pickle_file,
    load_registry,
    parse_entry,
    suggest_names,
    user_registry_path,
    write_entry,
)

logger = logging.getLogger(__name__)


def hash_directory(directory: str | Path, *, progress: bool = True) -> list[dict[str, Any]]:
    """``[{path, sha256, size}]`` for every non-hidden, non-pickle file under ``directory``."""
    directory = Path(directory)
    files = [f for f in list_model_files(directory) if not is_pickle_file(f)]
    out = []
    for rel in tqdm(files, desc=f"hashing {directory.name}", unit="file", disable=not progress):
        p = directory / rel
        out.append({"path": rel, "sha256": sha256_file(p, progress=progress), "size": p.stat().st_size})
    return out


def add(
    name: str,
    from_dir: str | Path,
    *,
    kind: str = "checkpoint",
    preset: str | None = None,
    stage: str | None = None,
    parent: str | None = None,
    description: str = "",
    license: str | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    eval_json: Iterable[str | Path] = (),
    url: str | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
    registry_path: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Entry:
    """Hash ``from_dir`` and write an entry called ``name`` into the user registry (or ``registry_path``).

    Returns the new entry. Raises :class:`~model_zoo.registry.RegistryError` naming the field on bad
    metadata, and :class:`~model_zoo.integrity.PickleCheckpointError` for a pickle-only checkpoint.
    """
    from_dir = Path(from_dir).expanduser().resolve()
    if not from_dir.is_dir():
        raise NotADirectoryError(f"--from: {from_dir} is not a directory")
    refuse_pickle_checkpoint(from_dir)
    skipped = [f for f in list_model_files(from_dir) if is_pickle_file(f)]
    if skipped:
        logger.warning("not registering pickle files (only safetensors are loaded): %s", ", ".join(skipped))
    if url and repo_id:
        raise RegistryError("give either url or repo_id (the source of the files), not both")
    if repo_id:
        source: dict[str, Any] = {"kind": "hf", "repo_id": repo_id, "revision": revision or "main"}
    elif url:
        source = {"kind": "url", "url": url}
    elif from_dir.is_relative_to(PACKAGE_DIR):  # shipped inside the package: keep the path relocatable
        source = {"kind": "local", "path": PACKAGE_SCHEME + from_dir.relative_to(PACKAGE_DIR).as_posix()}
    else:
        source = {"kind": "local", "path": str(from_dir)}
    target = Path(registry_path) if registry_path is not None else None
    reg = load_registry([SHIPPED_REGISTRY, user_registry_path()] + ([target] if target is not None else []))
    raw: dict[str, Any] = {"name": name, "kind": kind, "source": source}
    for key, value in (("preset", preset), ("stage", stage), ("parent", parent), ("license", license)):
        if value is not None:
            raw[key] = value
    if description:
        raw["description"] = description
    merged_metrics = {k: dict(v) for k, v in (metrics or {}).items()}
    for task, values in metrics_from_eval(eval_json).items():
        merged_metrics.setdefault(task, {}).update(values)
    if merged_metrics:
        raw["metrics"] = merged_metrics
    origin = str(target or user_registry_path())
    # check the metadata before hashing what may be gigabytes
    parse_entry({**raw, "files": [{"path": "model.safetensors", "sha256": "0" * 64}]}, origin=origin, index=0)
    if parent is not None and parent not in reg:
        raise RegistryError(
            f"entry {name!r}, field 'parent': expected the name of a registry entry, "
            f"got {parent!r}.{suggest_names(parent, reg.names())}"
        )
    entry = parse_entry({**raw, "files": hash_directory(from_dir, progress=progress)}, origin=origin, index=0)
    write_entry(entry, target, overwrite=overwrite)
    return entry
