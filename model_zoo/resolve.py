"""Resolve, download and verify zoo models: what every ``--model`` option of the CLI goes through.

    from model_zoo import resolve_model
    resolve_model("/path/to/checkpoint")            # a directory passes through
    resolve_model("Qwen/Qwen2.5-1.5B-Instruct")     # downloaded at the pinned revision, verified, cached

Where files live:

* ``local`` entries: their own directory (``package://...`` = inside the installed package);
* ``url`` entries: ``$TINYGG_HOME/models/<name>`` (``/`` in a name becomes ``--``);
* ``hf`` entries: the Hugging Face cache (``HF_HUB_CACHE``); entries with ``convert_pickle`` are
  materialised in ``$TINYGG_HOME/models/<name>`` (links to the cache + the converted safetensors).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from . import hf_source
from .http_download import download_file
from .integrity import (
    ChecksumMismatchError,
    FileCheck,
    VerifyReport,
    refuse_pickle_checkpoint,
    verify_directory,
)
from .registry import Entry, Registry, UnknownModelError, load_registry, suggest_names, tinygg_home

logger = logging.getLogger(__name__)


class ModelNotAvailableError(FileNotFoundError):
    """A zoo model is known but its files are not on this machine (and downloading was not allowed)."""


def store_dir(entry: Entry) -> Path:
    """The directory this project manages for ``entry`` under ``$TINYGG_HOME/models``."""
    return tinygg_home() / "models" / entry.name.replace("/", "--")


def _file_url(entry: Entry, path: str, url: str | None) -> str:
    if url:
        return url
    base = entry.source.url or ""
    return base + path if base.endswith("/") else f"{base}/{path}"


def _hf_cached_snapshot(entry: Entry) -> Path | None:
    """The entry's snapshot directory in the HF cache, if present (no network)."""
    src = entry.source
    repo_dir = hf_source.hf_cache_dir() / ("models--" + (src.repo_id or "").replace("/", "--"))
    commit = src.revision or ""
    if not src.pinned:
        ref = repo_dir / "refs" / commit
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snap = repo_dir / "snapshots" / commit
    return snap if snap.is_dir() else None


def expected_dir(entry: Entry) -> Path:
    """Where ``entry``'s files are, or will be once downloaded (no network, no check)."""
    if entry.source.kind == "local":
        return entry.source.local_dir()
    if entry.source.kind == "url" or entry.convert_pickle:
        return store_dir(entry)
    found = _hf_cached_snapshot(entry)
    if found is not None:
        return found
    repo_dir = hf_source.hf_cache_dir() / ("models--" + (entry.source.repo_id or "").replace("/", "--"))
    return repo_dir / "snapshots" / (entry.source.revision or "")


def locate(entry: Entry) -> Path | None:
    """Where ``entry``'s files are on this machine, without downloading (None if not there)."""
    if entry.source.kind == "local":
        d = entry.source.local_dir()
        return d if d.is_dir() else None
    if entry.source.kind == "url" or entry.convert_pickle:
        d = store_dir(entry)
        return d if d.is_dir() else None
    return _hf_cached_snapshot(entry)


def _registry(registry: Registry | None) -> Registry:
    return registry if registry is not None else load_registry()


def _lookup(reg: Registry, raw: str) -> Entry:
    """``reg.get(raw)``; a miss that looks like a path says that no such directory exists either."""
    try:
        return reg.get(raw)
    except UnknownModelError:
        if not (raw.startswith(("/", ".", "~")) or raw.count("/") > 1):
            raise
    raise UnknownModelError(
        f"{raw!r} is neither an existing directory nor a zoo model name.{suggest_names(raw, reg.names())} "
        "(`tinygg zoo list` shows all names)"
    )


def _raise_if_bad(report: VerifyReport, entry: Entry) -> None:
    problems = report.problems()
    if problems:
        detail = "; ".join(f"{c.path}: {c.status} ({c.detail})" for c in problems[:5])
        if all(c.status == "missing" for c in problems):
            raise ModelNotAvailableError(f"{entry.name}: files missing from {report.directory}: {detail}")
        raise ChecksumMismatchError(f"{entry.name}: {report.directory} failed verification: {detail}")


def download(
    name: str,
    dir: str | Path | None = None,
    *,
    registry: Registry | None = None,
    offline: bool | None = None,
    progress: bool = True,
) -> Path:
    """Fetch the files of zoo model ``name`` (into ``dir`` if given), verify them, return the directory.

    Already-present verified files are not fetched again; an interrupted URL transfer resumes.
    """
    entry = _registry(registry).get(name)
    target = Path(dir).expanduser() if dir is not None else None
    kind = entry.source.kind
    if kind == "local":
        src_dir = entry.source.local_dir()
        if not src_dir.is_dir():
            raise ModelNotAvailableError(
                f"{entry.name}: local directory {src_dir} does not exist (registered in {entry.origin})"
            )
        _raise_if_bad(verify_directory(src_dir, entry.files), entry)
        if target is None or target.resolve() == src_dir.resolve():
            return src_dir
        target.mkdir(parents=True, exist_ok=True)
        for f in entry.files:
            (target / f.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src_dir / f.path, target / f.path)
        _raise_if_bad(verify_directory(target, entry.files), entry)
        return target
    if kind == "url":
        out = target or store_dir(entry)
        out.mkdir(parents=True, exist_ok=True)
        present = verify_directory(out, entry.files)
        good = {c.path for c in present.checks if c.status == "ok"}
        for f in entry.files:
            if f.path in good:
                continue
            stale = out / f.path
            if stale.exists():
                logger.warning("%s: %s failed verification; fetching it again", entry.name, stale)
                stale.unlink()
            download_file(
                _file_url(entry, f.path, f.url), out / f.path, sha256=f.sha256, size=f.size, progress=progress
            )
        _raise_if_bad(verify_directory(out, entry.files), entry)
        return out
    # hf
    if entry.convert_pickle:
        out = target or store_dir(entry)
        if hf_source.conversion_is_current(entry, out):  # converted before: no snapshot, no network
            return out
        snap = hf_source.snapshot(entry, local_dir=target, offline=offline)
        return hf_source.materialize_converted(entry, snap, out)
    return hf_source.snapshot(entry, local_dir=target, offline=offline)


_fetch = download  # resolve_model's `download` flag shadows the function name


def resolve_model(
    name_or_path: str | os.PathLike, *, download: bool = True, registry: Registry | None = None
) -> Path:
    """A local directory for ``name_or_path``: an existing directory passes through (a pickle-only
    checkpoint is refused); a zoo name is downloaded if needed (``download=True``), verified, and
    its directory returned. An unknown name raises :class:`UnknownModelError` with suggestions."""
    raw = os.fspath(name_or_path)
    path = Path(raw).expanduser()
    if path.is_dir():
        refuse_pickle_checkpoint(path)
        return path
    if path.is_file():
        raise NotADirectoryError(f"--model expects a checkpoint directory or a zoo name, got the file {path}")
    reg = _registry(registry)
    entry = _lookup(reg, raw)
    if download:
        return _fetch(entry.name, registry=reg)
    where = locate(entry)
    if where is None:
        raise ModelNotAvailableError(
            f"{entry.name} is not on this machine ({entry.source.describe()}); run `tinygg zoo download "
            f"{entry.name}`"
        )
    if entry.source.kind == "hf" and not entry.convert_pickle:
        return hf_source.snapshot(entry, offline=True)
    _raise_if_bad(verify_directory(where, entry.files), entry)
    return where


def verify(
    name_or_dir: str | os.PathLike, *, registry: Registry | None = None, full: bool = True
) -> VerifyReport:
    """Check a zoo model's local files (or a directory) against the registry's sha256 and sizes.

    A directory that belongs to a registry entry is checked against that entry; any other directory
    gets the reference-free checks (safetensors headers, JSON syntax, no pickle-only weights).
    Every file is hashed again unless ``full=False`` (then unchanged files, by size and mtime, are
    trusted from the last verification).
    """
    raw = os.fspath(name_or_dir)
    path = Path(raw).expanduser()
    reg = _registry(registry)
    if path.is_dir():
        resolved = path.resolve()
        for entry in reg.entries():
            where = locate(entry)
            if where is not None and where.resolve() == resolved:
                return verify_directory(path, entry.files, full=full)
        return verify_directory(path, (), full=full)
    entry = _lookup(reg, raw)
    where = locate(entry)
    if where is None:
        report = VerifyReport(expected_dir(entry))
        report.checks.append(
            FileCheck(".", "missing", f"not downloaded: run `tinygg zoo download {entry.name}`")
        )
        return report
    return verify_directory(where, entry.files, full=full)
