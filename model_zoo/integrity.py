"""Integrity of a model directory: sha256 checks, safetensors header checks, and the pickle refusal.

Only safetensors weights are ever loaded by this project. A pickle-based checkpoint (``*.bin``, ``*.pt``,
``*.pth``, ``*.ckpt``, ``*.pkl``) can run arbitrary code when unpickled, so a directory whose weights
are only in such files is refused with :class:`PickleCheckpointError`, whose message says how to
convert it (``tinygg zoo convert DIR``).

Hashing large files is slow, so each verified directory gets a stamp (path, size, mtime and sha256 per
file) in ``$TINYGG_HOME/stamps/``; a file whose size and mtime match its stamp is not hashed again.
Stamps never go inside a model directory (which may be read-only, in the HF cache, or about to be
published).
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .registry import FileSpec, is_pickle_file, tinygg_home

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_PROGRESS_MIN_BYTES = 64 << 20  # draw a bar only for files this large


class PickleCheckpointError(ValueError):
    """A checkpoint stores its weights in a pickle format, which this project refuses to load."""


class ChecksumMismatchError(ValueError):
    """A file's sha256 differs from the registry's; the file has been removed."""


def sha256_file(path: str | Path, *, progress: bool = True) -> str:
    """Hex sha256 of a file, streamed (a progress bar for files over 64 MiB)."""
    path = Path(path)
    h = hashlib.sha256()
    size = path.stat().st_size
    with (
        open(path, "rb") as fh,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"sha256 {path.name}",
            leave=False,
            disable=not progress or size < _PROGRESS_MIN_BYTES,
        ) as bar,
    ):
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def pickle_refusal_message(what: str, pickles: Sequence[str]) -> str:
    """The explanation shown when a pickle checkpoint is refused."""
    listed = ", ".join(pickles[:5]) + (" ..." if len(pickles) > 5 else "")
    return (
        f"{what} holds pickle weights ({listed}) and no safetensors. Pickle files can execute arbitrary "
        "code when loaded, so TinyGroundingGPT only loads *.safetensors. If you trust the file, convert it "
        "once: `tinygg zoo convert DIR` (loads the tensors with torch.load(weights_only=True), which "
        "refuses non-tensor objects, and writes model.safetensors beside it), or in Python: "
        "`safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')`; "
        "transformers' `model.save_pretrained(dir)` also writes safetensors."
    )


def list_model_files(directory: Path) -> list[str]:
    """Relative paths of the regular files under ``directory`` (hidden files and caches excluded)."""
    out = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or "__pycache__" in rel.parts:
            continue
        if p.is_file():
            out.append(rel.as_posix())
    return out


def refuse_pickle_checkpoint(directory: str | Path) -> None:
    """Raise :class:`PickleCheckpointError` if ``directory`` has pickle weights and no safetensors.

    A directory with both (many Hub repos ship both) passes: only the safetensors are loaded.
    """
    directory = Path(directory)
    files = list_model_files(directory)
    pickles = [f for f in files if is_pickle_file(f)]
    if pickles and not any(f.endswith(".safetensors") for f in files):
        raise PickleCheckpointError(pickle_refusal_message(f"checkpoint {directory}", pickles))


def check_safetensors(path: str | Path) -> str | None:
    """None if ``path`` has a well-formed safetensors header whose offsets fit the file, else the problem."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return "shorter than the 8-byte header length"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 << 20:
            return f"header length {n} does not fit a file of {size} bytes"
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return f"header is not JSON ({exc})"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1]):
            return f"tensor {name!r} has no valid data_offsets"
        end = max(end, offsets[1])
    if 8 + n + end != size:
        return f"tensor data ends at byte {8 + n + end} but the file has {size} bytes (truncated or padded)"
    return None


@dataclass
class FileCheck:
    """The outcome for one file: ``ok``, ``missing``, ``mismatch``, ``corrupt``, ``unchecked``."""

    path: str
    status: str
    detail: str = ""


@dataclass
class VerifyReport:
    """What :func:`verify_directory` found."""

    directory: Path
    checks: list[FileCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status in ("ok", "unchecked") for c in self.checks)

    def problems(self) -> list[FileCheck]:
        return [c for c in self.checks if c.status not in ("ok", "unchecked")]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for c in self.checks:
            counts[c.status] = counts.get(c.status, 0) + 1
        parts = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        return f"{self.directory}: {'OK' if self.ok else 'FAILED'} ({parts or 'no files'})"


def stamp_path(directory: Path) -> Path:
    """The stamp file of ``directory``: ``$TINYGG_HOME/stamps/<dir name>-<hash of its path>.json``."""
    resolved = str(directory.resolve())
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:16]
    return tinygg_home() / "stamps" / f"{directory.resolve().name}-{digest}.json"


def _load_stamp(stamp_file: Path) -> dict[str, dict]:
    try:
        return json.loads(stamp_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save_stamp(stamp_file: Path, stamp: dict[str, dict]) -> None:
    try:
        stamp_file.parent.mkdir(parents=True, exist_ok=True)
        stamp_file.write_text(json.dumps(stamp, indent=1, sort_keys=True))
    except OSError:  # a read-only directory (e.g. an installed package) just re-hashes next time
        logger.debug("could not write the verification stamp %s", stamp_file)


def file_digest(directory: Path, rel: str, stamp: dict[str, dict]) -> str:
    """sha256 of ``directory/rel``, reusing ``stamp`` when size and mtime are unchanged (updates it)."""
    p = directory / rel
    st = p.stat()
    old = stamp.get(rel)
    if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
        return old["sha256"]
    digest = sha256_file(p)
    stamp[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    return digest


def verify_directory(
    directory: str | Path, files: Iterable[FileSpec] = (), *, full: bool = False
) -> VerifyReport:
    """Check ``directory`` against the listed ``files`` (sha256 and size) and check every other file it
    holds for what can be checked without a reference (safetensors headers, JSON syntax, no
    pickle-only weights). ``full=True`` re-hashes every file instead of trusting the stamp."""
    directory = Path(directory)
    report = VerifyReport(directory)
    stamp_file = stamp_path(directory)
    stamps = {} if full else _load_stamp(stamp_file)
    listed = {f.path: f for f in files}
    for rel, spec in listed.items():
        p = directory / rel
        if not p.is_file():
            report.checks.append(FileCheck(rel, "missing", "not in the directory"))
            continue
        if spec.size is not None and p.stat().st_size != spec.size:
            report.checks.append(
                FileCheck(rel, "mismatch", f"size {p.stat().st_size} bytes, expected {spec.size}")
            )
            continue
        digest = file_digest(directory, rel, stamps)
        if digest != spec.sha256:
            stamps.pop(rel, None)
            report.checks.append(FileCheck(rel, "mismatch", f"sha256 {digest}, expected {spec.sha256}"))
        else:
            report.checks.append(FileCheck(rel, "ok", "sha256 matches"))
    present = list_model_files(directory) if directory.is_dir() else []
    for rel in present:
        if rel in listed:
            continue
        p = directory / rel
        if rel.endswith(".safetensors"):
            problem = check_safetensors(p)
            report.checks.append(
                FileCheck(
                    rel,
                    "corrupt" if problem else "unchecked",
                    problem or "valid header; no sha256 in the registry",
                )
            )
        elif rel.endswith(".json"):
            try:
                json.loads(p.read_text(encoding="utf-8"))
                report.checks.append(FileCheck(rel, "unchecked", "valid JSON; no sha256 in the registry"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                report.checks.append(FileCheck(rel, "corrupt", f"not valid JSON: {exc}"))
        elif is_pickle_file(rel):
            report.checks.append(FileCheck(rel, "unchecked", "pickle file: never loaded"))
        else:
            report.checks.append(FileCheck(rel, "unchecked", "no sha256 in the registry"))
    pickles = [r for r in present if is_pickle_file(r)]
    if pickles and not any(r.endswith(".safetensors") for r in present):
        report.checks.append(
            FileCheck(pickles[0], "refused", pickle_refusal_message("this directory", pickles))
        )
    if not present and not listed:
        report.checks.append(FileCheck(".", "missing", "directory is empty or does not exist"))
    if directory.is_dir():
        _save_stamp(stamp_file, stamps)
    return report
