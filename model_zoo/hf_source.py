"""Hugging Face sources: ``snapshot_download`` at the pinned revision, verified, offline-aware.

Files land in the ordinary Hugging Face cache (``HF_HUB_CACHE``, shared with transformers) unless a
``local_dir`` is given. Only the entry's ``allow_patterns`` are fetched (safetensors, configs and
tokenizer files by default), so pickle weights are never downloaded unless the entry lists them under
``convert_pickle``; those are converted to safetensors right after download (see
:mod:`model_zoo.convert`) into a directory under ``$TINYGG_HOME/models``.

Offline (``HF_HUB_OFFLINE=1``, read at call time as well as by huggingface_hub at import): the snapshot
is served from the cache; if it is not there, :class:`OfflineMissingError` names the repository,
revision, cache directory and the missing files. ``HF_ENDPOINT`` is also read at call time, so a mirror
can be chosen per process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from .convert import convert_pickle_file
from .integrity import ChecksumMismatchError, verify_directory
from .registry import Entry, is_pickle_file

logger = logging.getLogger(__name__)

SOURCE_RECORD = ".tinygg-source.json"


class OfflineMissingError(FileNotFoundError):
    """Offline mode is on and what the entry needs is not in the local cache."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "on", "yes", "true"}


def hf_offline() -> bool:
    """True if Hugging Face downloads are disabled (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return constants.is_offline_mode() or _truthy(env)


def hf_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def _remove_cached(path: Path) -> None:
    """Remove a file of a snapshot: the symlink and, in the HF cache, the blob it points to."""
    if path.is_symlink():
        target = path.resolve()
        path.unlink()
        if target.exists():
            target.unlink()
    elif path.exists():
        path.unlink()


def _patterns(entry: Entry) -> list[str]:
    patterns = list(entry.source.allow_patterns)
    for f in entry.files:  # a listed file is always fetched, whatever the patterns
        if f.path not in patterns:
            patterns.append(f.path)
    return patterns


def snapshot(entry: Entry, *, local_dir: Path | None = None, offline: bool | None = None) -> Path:
    """Download (or, offline, find in the cache) the entry's files and verify the listed sha256.

    Returns the snapshot directory (in the HF cache, or ``local_dir``). huggingface_hub draws the
    progress bars (``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides them).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    src = entry.source
    assert src.kind == "hf" and src.repo_id and src.revision
    offline = hf_offline() if offline is None else offline
    if not src.pinned:
        logger.warning(
            "%s: revision %r is a branch, not a pinned commit: the files may change", entry.name, src.revision
        )
    cache = hf_cache_dir()
    try:
        path = Path(
            snapshot_download(
                src.repo_id,
                revision=src.revision,
                allow_patterns=_patterns(entry),
                cache_dir=str(cache),
                local_dir=str(local_dir) if local_dir is not None else None,
                local_files_only=offline,
                endpoint=os.environ.get("HF_ENDPOINT") or None,
            )
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        where = local_dir if local_dir is not None else cache
        missing = (
            ", ".join(f.path for f in entry.files) or "the snapshot (" + ", ".join(_patterns(entry)) + ")"
        )
        mode = "offline (HF_HUB_OFFLINE=1)" if offline else "the Hub could not be reached"
        raise OfflineMissingError(
            f"{entry.name}: {mode} and {src.repo_id}@{src.revision} is not in the local cache {where}; "
            f"missing: {missing}. Run `tinygg zoo download {entry.name}` where the Hub is reachable, or copy "
            f"that cache here (HF_HUB_CACHE)."
        ) from exc
    missing = [f.path for f in entry.files if not (path / f.path).is_file()]
    if missing:
        if offline:
            raise OfflineMissingError(
                f"{entry.name}: offline (HF_HUB_OFFLINE=1) and the cached snapshot {path} lacks "
                f"{', '.join(missing)}. Download it where the Hub is reachable: "
                f"`tinygg zoo download {entry.name}`."
            )
        raise FileNotFoundError(f"{entry.name}: {src.repo_id}@{src.revision} has no {', '.join(missing)}")
    report = verify_directory(path, entry.files)
    bad = [c for c in report.checks if c.status == "mismatch"]
    if bad:
        for c in bad:
            _remove_cached(path / c.path)
        raise ChecksumMismatchError(
            f"{entry.name}: {'; '.join(f'{c.path}: {c.detail}' for c in bad)}. The file(s) were removed from "
            f"{path}; the registry entry or the repository at {src.revision} is wrong."
        )
    return path


def _conversion_record(entry: Entry) -> dict:
    return {
        "repo_id": entry.source.repo_id,
        "revision": entry.source.revision,
        "converted": list(entry.convert_pickle),
    }


def conversion_is_current(entry: Entry, out_dir: Path) -> bool:
    """True if ``out_dir`` was built by :func:`materialize_converted` from the entry's revision."""
    try:
        record = json.loads((out_dir / SOURCE_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return record == _conversion_record(entry) and any(out_dir.glob("*.safetensors"))


def materialize_converted(entry: Entry, snapshot_dir: Path, out_dir: Path) -> Path:
    """Build ``out_dir``: links to the snapshot's non-pickle files plus the ``convert_pickle`` files
    converted to safetensors. Skipped when ``out_dir`` was already built from the same revision."""
    if conversion_is_current(entry, out_dir):
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    same_dir = snapshot_dir.resolve() == out_dir.resolve()
    for p in sorted(snapshot_dir.rglob("*")):
        rel = p.relative_to(snapshot_dir)
        if not p.is_file() or is_pickle_file(p.name) or any(s.startswith(".") for s in rel.parts):
            continue
        if same_dir:
            continue
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() or dest.is_symlink():
            dest.unlink()
        try:
            os.symlink(p.resolve(), dest)
        except OSError:
            shutil.copy2(p, dest)
    for name in entry.convert_pickle:
        pk = snapshot_dir / name
        if not pk.is_file():
            raise FileNotFoundError(
                f"{entry.name}: {name} (listed in convert_pickle) is not in {snapshot_dir}"
            )
        target = out_dir / (
            Path(name).with_suffix(".safetensors").name
            if len(entry.convert_pickle) > 1
            else "model.safetensors"
        )
        convert_pickle_file(pk, target)
        if same_dir:
            pk.unlink()  # a private copy (local_dir): keep only the safetensors
    (out_dir / SOURCE_RECORD).write_text(json.dumps(_conversion_record(entry)))
    return out_dir
