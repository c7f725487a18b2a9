"""The model registry: entries kept as data (YAML), typed and validated on load.

Two files are merged, later ones overriding earlier ones by name (with a logged warning):

1. the registry shipped inside the package, ``model_zoo/registry.yaml``;
2. the user registry, ``$TINYGG_HOME/registry.yaml`` (default ``~/.cache/tinygg/registry.yaml``), which
   :func:`model_zoo.add` writes to.

An entry is a pretrained **component** (CLIP, DINOv2, a Qwen2.5 LLM) or a TinyGroundingGPT
**checkpoint** (with preset, training stage, parent and metrics). Its ``source`` says where the files
come from:

* ``hf``: a Hugging Face repository at a pinned ``revision`` (a 40-hex commit; a branch name is
  accepted but logged as unpinned), downloaded with ``huggingface_hub``;
* ``url``: plain HTTP(S); each file's URL is ``source.url`` joined with the file path, unless the file
  gives its own ``url``;
* ``local``: a directory on disk. ``package://DIR`` is relative to the ``model_zoo`` package directory
  (checkpoints shipped inside the wheel); a relative path is relative to the registry file.

``files`` lists the files with their sha256 (and optionally size); every listed file is verified.
Every validation error names the registry file, the entry and the field, with what was expected.

>>> reg = Registry.from_mapping({"version": 1, "models": [{"name": "toy", "kind": "component",
...     "source": {"kind": "url", "url": "http://example.org/toy/"},
...     "files": [{"path": "model.safetensors", "sha256": "0" * 64}]}]}, origin="doc.yaml")
>>> reg.get("toy").source.kind
'url'
>>> try:
...     reg.get("tyo")
... except UnknownModelError as exc:
...     print(exc)
unknown model 'tyo'. Did you mean: toy? (`tinygg zoo list` shows all names)
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_REGISTRY = PACKAGE_DIR / "registry.yaml"
PACKAGE_SCHEME = "package://"

KINDS = ("component", "checkpoint")
SOURCE_KINDS = ("hf", "url", "local")
STAGES = ("stage1", "stage2", "stage3", "dig", "finetune")
# Weight formats that unpickle (and so can run code) when loaded: never loaded by this project.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DEFAULT_ALLOW_PATTERNS = (
    "*.safetensors",
    "*.json",
    "*.txt",
    "*.jinja",
    "*.model",
    "*.tiktoken",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class RegistryError(ValueError):
    """A registry file or entry is malformed; the message names the file, entry and field."""


class UnknownModelError(KeyError, ValueError):
    """A name is neither a registry entry nor an existing directory; suggests the closest names.

    A ``KeyError`` (a failed lookup) that is also a ``ValueError`` (bad user input), so a CLI that
    reports ``ValueError`` in one line reports this too."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def tinygg_home() -> Path:
    """Root of this project's user files: ``$TINYGG_HOME``, else ``$XDG_CACHE_HOME/tinygg``, else
    ``~/.cache/tinygg``."""
    if os.environ.get("TINYGG_HOME"):
        return Path(os.environ["TINYGG_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "tinygg"


def user_registry_path() -> Path:
    """The registry file that :func:`model_zoo.add` writes to."""
    return tinygg_home() / "registry.yaml"


def is_pickle_file(path: str | Path) -> bool:
    """True for weight files in a pickle-based format (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl``)."""
    return str(path).lower().endswith(PICKLE_SUFFIXES)


@dataclass(frozen=True)
class FileSpec:
    """One file of an entry: its path inside the model directory and its expected sha256."""

    path: str
    sha256: str
    size: int | None = None
    url: str | None = None  # per-file URL for `url` sources; default: source.url joined with path


@dataclass(frozen=True)
class Source:
    """Where an entry's files come from (see the module docstring)."""

    kind: str
    repo_id: str | None = None
    revision: str | None = None
    allow_patterns: tuple[str, ...] = DEFAULT_ALLOW_PATTERNS
    url: str | None = None
    path: str | None = None
    origin_dir: Path | None = None  # directory of the registry file, for relative local paths

    @property
    def pinned(self) -> bool:
        return self.kind != "hf" or bool(self.revision and _COMMIT_RE.fullmatch(self.revision))

    def local_dir(self) -> Path:
        """The directory of a ``local`` source."""
        if self.kind != "local" or self.path is None:
            raise ValueError(f"source kind {self.kind!r} has no local directory")
        if self.path.startswith(PACKAGE_SCHEME):
            return PACKAGE_DIR / self.path[len(PACKAGE_SCHEME) :]
        p = Path(self.path).expanduser()
        if not p.is_absolute() and self.origin_dir is not None:
            p = self.origin_dir / p
        return p

    def describe(self) -> str:
        if self.kind == "hf":
            return f"hf://{self.repo_id}@{self.revision}"
        if self.kind == "url":
            return str(self.url)
        return str(self.path)


@dataclass(frozen=True)
class Entry:
    """A registry entry: a pretrained component or a TinyGroundingGPT checkpoint."""

    name: str
    kind: str
    source: Source
    files: tuple[FileSpec, ...] = ()
    preset: str | None = None
    stage: str | None = None
    parent: str | None = None
    description: str = ""
    license: str | None = None
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    convert_pickle: tuple[str, ...] = ()
    origin: str = "<memory>"

    def to_mapping(self) -> dict[str, Any]:
        """The YAML form of this entry (what :meth:`Registry.from_mapping` reads back)."""
        src: dict[str, Any] = {"kind": self.source.kind}
        if self.source.kind == "hf":
            src.update(repo_id=self.source.repo_id, revision=self.source.revision)
            if tuple(self.source.allow_patterns) != DEFAULT_ALLOW_PATTERNS:
                src["allow_patterns"] = list(self.source.allow_patterns)
        elif self.source.kind == "url":
            src["url"] = self.source.url
        else:
            src["path"] = self.source.path
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        for key in ("preset", "stage", "parent", "license"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.description:
            out["description"] = self.description
        out["source"] = src
        if self.convert_pickle:
            out["convert_pickle"] = list(self.convert_pickle)
        files = []
        for f in self.files:
            d: dict[str, Any] = {"path": f.path, "sha256": f.sha256}
            if f.size is not None:
                d["size"] = f.size
            if f.url is not None:
                d["url"] = f.url
            files.append(d)
        out["files"] = files
        if self.metrics:
            out["metrics"] = {task: dict(values) for task, values in self.metrics.items()}
        return out


class _Where:
    """Builds error messages naming the file, the entry and the field."""

    def __init__(self, origin: str, index: int, name: str | None) -> None:
        self.origin, self.index, self.name = origin, index, name

    def error(self, field_name: str, expected: str, got: Any) -> RegistryError:
        who = f"entry {self.name!r}" if self.name else f"entry #{self.index}"
        return RegistryError(
            f"registry {self.origin}, {who} (#{self.index}), field '{field_name}': expected {expected}, "
            f"got {got!r}"
        )


def _opt_str(raw: Mapping[str, Any], key: str, where: _Where, prefix: str = "") -> str | None:
    value = raw.get(key)
    if value is not None and not (isinstance(value, str) and value.strip()):
        raise where.error(prefix + key, "a non-empty string", value)
    return value


def _parse_source(raw: Any, where: _Where, origin_dir: Path | None) -> Source:
    if not isinstance(raw, Mapping):
        raise where.error("source", "a mapping with 'kind' in " + "/".join(SOURCE_KINDS), raw)
    kind = raw.get("kind")
    if kind not in SOURCE_KINDS:
        raise where.error("source.kind", "one of " + ", ".join(SOURCE_KINDS), kind)
    allowed = {
        "hf": {"kind", "repo_id", "revision", "allow_patterns"},
        "url": {"kind", "url"},
        "local": {"kind", "path"},
    }[kind]
    extra = sorted(set(raw) - allowed)
    if extra:
        raise where.error(f"source.{extra[0]}", f"only {sorted(allowed)} for a {kind!r} source", extra[0])
    if kind == "hf":
        repo_id = _opt_str(raw, "repo_id", where, "source.")
        if not repo_id or repo_id.count("/") != 1:
            raise where.error("source.repo_id", "'owner/name'", repo_id)
        revision = _opt_str(raw, "revision", where, "source.")
        if revision is None:
            raise where.error("source.revision", "a 40-hex commit hash (or a branch name)", None)
        if not _COMMIT_RE.fullmatch(revision):
            if re.fullmatch(r"[0-9a-fA-F]{7,39}", revision) or re.fullmatch(r"[0-9A-F]{40}", revision):
                raise where.error("source.revision", "a full 40-character lowercase commit hash", revision)
            logger.debug("%s: revision %r is a branch, not a pinned commit", where.name, revision)
        patterns = raw.get("allow_patterns", list(DEFAULT_ALLOW_PATTERNS))
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            raise where.error("source.allow_patterns", "a list of glob strings", patterns)
        return Source("hf", repo_id=repo_id, revision=revision, allow_patterns=tuple(patterns))
    if kind == "url":
        url = _opt_str(raw, "url", where, "source.")
        if not url or not re.match(r"^https?://", url):
            raise where.error("source.url", "an http:// or https:// URL", url)
        return Source("url", url=url)
    path = _opt_str(raw, "path", where, "source.")
    if not path:
        raise where.error("source.path", "a directory (package://DIR, absolute, or relative)", path)
    return Source("local", path=path, origin_dir=origin_dir)


def _parse_files(raw: Any, where: _Where, source: Source) -> tuple[FileSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise where.error("files", "a list of {path, sha256[, size, url]}", raw)
    out: list[FileSpec] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        fld = f"files[{i}]"
        if not isinstance(item, Mapping):
            raise where.error(fld, "a mapping {path, sha256[, size, url]}", item)
        extra = sorted(set(item) - {"path", "sha256", "size", "url"})
        if extra:
            raise where.error(f"{fld}.{extra[0]}", "only path, sha256, size, url", extra[0])
        path = item.get("path")
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in Path(path).parts:
            raise where.error(f"{fld}.path", "a relative path inside the model directory", path)
        if path in seen:
            raise where.error(f"{fld}.path", "each file listed once", path)
        seen.add(path)
        sha = item.get("sha256")
        if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
            raise where.error(f"{fld}.sha256", "64 lowercase hex characters", sha)
        size = item.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise where.error(f"{fld}.size", "a non-negative integer (bytes)", size)
        url = item.get("url")
        if url is not None and not (isinstance(url, str) and re.match(r"^https?://", url)):
            raise where.error(f"{fld}.url", "an http:// or https:// URL", url)
        if url is not None and source.kind != "url":
            raise where.error(f"{fld}.url", "no per-file url unless source.kind is 'url'", url)
        out.append(FileSpec(path=path, sha256=sha, size=size, url=url))
    return tuple(out)


def _parse_metrics(raw: Any, where: _Where) -> dict[str, dict[str, float]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise where.error("metrics", "a mapping task -> {metric: number}", raw)
    out: dict[str, dict[str, float]] = {}
    for task, values in raw.items():
        if not isinstance(values, Mapping):
            raise where.error(f"metrics.{task}", "a mapping metric -> number", values)
        out[str(task)] = {}
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise where.error(f"metrics.{task}.{key}", "a number", value)
            out[str(task)][str(key)] = float(value)
    return out


_ENTRY_KEYS = {
    "name",
    "kind",
    "source",
    "files",
    "preset",
    "stage",
    "parent",
    "description",
    "license",
    "metrics",
    "convert_pickle",
}


def parse_entry(raw: Any, *, origin: str, index: int, origin_dir: Path | None = None) -> Entry:
    """Validate one raw YAML mapping into an :class:`Entry` (errors name origin, entry and field)."""
    name = raw.get("name") if isinstance(raw, Mapping) else None
    where = _Where(origin, index, name if isinstance(name, str) else None)
    if not isinstance(raw, Mapping):
        raise where.error("<entry>", "a mapping", raw)
    extra = sorted(set(raw) - _ENTRY_KEYS)
    if extra:
        raise where.error(extra[0], "one of " + ", ".join(sorted(_ENTRY_KEYS)), extra[0])
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name.endswith("/"):
        raise where.error("name", "letters, digits, '.', '_', '-', '/' (starting with a letter/digit)", name)
    kind = raw.get("kind")
    if kind not in KINDS:
        raise where.error("kind", "one of " + ", ".join(KINDS), kind)
    source = _parse_source(raw.get("source"), where, origin_dir)
    files = _parse_files(raw.get("files"), where, source)
    preset = _opt_str(raw, "preset", where)
    stage = _opt_str(raw, "stage", where)
    parent = _opt_str(raw, "parent", where)
    if kind == "checkpoint":
        if preset is None:
            raise where.error("preset", "a model preset for a checkpoint (tiny, 1.5b, 3b, 7b, ...)", None)
        if stage is None or stage not in STAGES:
            raise where.error("stage", "one of " + ", ".join(STAGES), stage)
    elif stage is not None:
        raise where.error("stage", "no stage for a component", stage)
    if source.kind != "hf" and not files:
        raise where.error("files", f"at least one file with its sha256 for a {source.kind!r} source", [])
    convert = raw.get("convert_pickle") or []
    if not isinstance(convert, list) or not all(isinstance(c, str) and is_pickle_file(c) for c in convert):
        raise where.error("convert_pickle", "a list of pickle weight file names (*.bin, *.pt, ...)", convert)
    if convert and source.kind != "hf":
        raise where.error("convert_pickle", "only for 'hf' sources (converted after download)", convert)
    for i, f in enumerate(files):
        if is_pickle_file(f.path) and f.path not in convert:
            raise where.error(
                f"files[{i}].path",
                "a safetensors/config/tokenizer file (pickle weights are never loaded; list the file "
                "under convert_pickle to convert it to safetensors after download)",
                f.path,
            )
    description = raw.get("description", "") or ""
    if not isinstance(description, str):
        raise where.error("description", "a string", description)
    return Entry(
        name=name,
        kind=kind,
        source=source,
        files=files,
        preset=preset,
        stage=stage,
        parent=parent,
        description=description.strip(),
        license=_opt_str(raw, "license", where),
        metrics=_parse_metrics(raw.get("metrics"), where),
        convert_pickle=tuple(convert),
        origin=origin,
    )


class Registry:
    """A set of entries by name, merged from one or more registry files."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: dict[str, Entry] = {}
        for e in entries:
            self._add(e)

    def _add(self, entry: Entry) -> None:
        old = self._entries.get(entry.name)
        if old is not None:
            logger.warning(
                "zoo entry %r from %s overrides the one from %s", entry.name, entry.origin, old.origin
            )
        self._entries[entry.name] = entry

    @classmethod
    def from_mapping(cls, data: Any, *, origin: str, origin_dir: Path | None = None) -> Registry:
        """Validate a parsed registry document ``{version: 1, models: [...]}``."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise RegistryError(
                f"registry {origin}: expected a mapping with 'version' and 'models', got {data!r}"
            )
        if data.get("version", 1) != 1:
            raise RegistryError(
                f"registry {origin}, field 'version': expected 1, got {data.get('version')!r}"
            )
        extra = sorted(set(data) - {"version", "models"})
        if extra:
            raise RegistryError(
                f"registry {origin}: unknown top-level field {extra[0]!r} (expected version, models)"
            )
        models = data.get("models") or []
        if not isinstance(models, list):
            raise RegistryError(
                f"registry {origin}, field 'models': expected a list of entries, got {models!r}"
            )
        reg = cls()
        for i, raw in enumerate(models):
            entry = parse_entry(raw, origin=origin, index=i, origin_dir=origin_dir)
            if entry.name in reg._entries:
                raise _Where(origin, i, entry.name).error(
                    "name", "a name not used by an earlier entry", entry.name
                )
            reg._entries[entry.name] = entry
        return reg

    @classmethod
    def from_file(cls, path: str | Path) -> Registry:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise RegistryError(f"registry {path}: not valid YAML: {exc}") from exc
        return cls.from_mapping(data, origin=str(path), origin_dir=path.parent)

    def merged(self, other: Registry) -> Registry:
        """A new registry with ``other``'s entries added (overriding same-named ones)."""
        out = Registry(self._entries.values())
        for e in other._entries.values():
            out._add(e)
        return out

    def check_parents(self) -> None:
        """Every ``parent`` names an entry of this registry."""
        for e in self._entries.values():
            if e.parent is not None and e.parent not in self._entries:
                hint = suggest_names(e.parent, self._entries)
                raise RegistryError(
                    f"registry {e.origin}, entry {e.name!r}, field 'parent': expected the name of a registry "
                    f"entry, got {e.parent!r}{hint}"
                )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Entry:
        """The entry called ``name``; an unknown name raises :class:`UnknownModelError` with suggestions."""
        try:
            return self._entries[name]
        except KeyError:
            pass
        folded = {n.lower(): n for n in self._entries}
        if name.lower() in folded:  # names are case-sensitive, but a case slip is obvious
            return self._entries[folded[name.lower()]]
        raise UnknownModelError(
            f"unknown model {name!r}.{suggest_names(name, self._entries)} (`tinygg zoo list` shows all names)"
        )


def suggest_names(name: str, names: Iterable[str]) -> str:
    """`` Did you mean: a, b?`` for the closest names (difflib), or an empty string."""
    pool = list(names)
    lowered = {n.lower(): n for n in pool}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
    # also match on the part after an owner prefix ("qwen2.5-3b-instruct" vs "Qwen/Qwen2.5-3B-Instruct")
    tails = {n.lower().rsplit("/", 1)[-1]: n for n in pool}
    for t in difflib.get_close_matches(name.lower().rsplit("/", 1)[-1], list(tails), n=3, cutoff=0.6):
        if tails[t].lower() not in close:
            close.append(tails[t].lower())
    if not close:
        return ""
    return " Did you mean: " + ", ".join(lowered[c] for c in close[:3]) + "?"


def load_registry(paths: Iterable[str | Path] | None = None) -> Registry:
    """The merged registry: the shipped file, then the user registry (if it exists).

    ``paths`` replaces that default list (tests, or a project keeping its own registry).
    """
    if paths is None:
        paths = [SHIPPED_REGISTRY, user_registry_path()]
    reg = Registry()
    for p in paths:
        p = Path(p)
        if p.exists():
            reg = reg.merged(Registry.from_file(p))
    reg.check_parents()
    return reg


def _header_comment(text: str) -> str:
    """The comment block at the top of a YAML file (kept when the file is rewritten)."""
    lines = []
    for line in text.splitlines(keepends=True):
        if not line.startswith("#") and line.strip():
            break
        lines.append(line)
    return "".join(lines)


def _entry_span(text: str, name: str) -> tuple[int, int, str] | None:
    """Where the block-list item ``- name: NAME`` starts and ends in ``text``, with its indent; ``None`` when
    it is not written in that plain form (then the caller rewrites the whole file)."""
    quoted = "|".join(re.escape(q) for q in (name, f"'{name}'", f'"{name}"'))
    m = re.search(rf"^([ \t]*)- name:[ \t]*(?:{quoted})[ \t]*\n", text, flags=re.MULTILINE)
    if m is None:
        return None
    indent = m.group(1)
    # the entry ends where the next item, a comment at its indent (the next entry's) or a top-level line starts
    nxt = re.compile(rf"^(?:{re.escape(indent)}(?:- |#)|\S)", flags=re.MULTILINE).search(text, m.end())
    return m.start(), (nxt.start() if nxt else len(text)), indent


def write_entry(entry: Entry, path: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """Add (or with ``overwrite`` replace) ``entry`` in the registry file ``path`` (default: the user
    registry), keeping the other entries; the file is re-validated before it replaces the old one.

    A new entry is appended to the end of the file and a replaced one is rewritten in place, so comments and
    layout (of the shipped registry, say) survive; a file the text edit cannot follow is rewritten whole,
    keeping its header comment.
    """
    path = Path(path) if path is not None else user_registry_path()
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    names = Registry.from_file(path).names() if path.exists() else []  # refuse to edit an invalid file
    if entry.name in names and not overwrite:
        raise RegistryError(
            f"registry {path}: an entry named {entry.name!r} exists; pass overwrite=True "
            "(CLI: --overwrite) to replace it"
        )
    item = yaml.safe_dump([entry.to_mapping()], sort_keys=False, allow_unicode=True, width=100)
    data = yaml.safe_load(text) if text.strip() else None
    if entry.name not in names and isinstance(data, dict) and list(data)[-1] == "models" and data["models"]:
        # append as one more item of the trailing `models:` block list
        first_item = re.search(r"^models:[ \t]*\n(?:[ \t]*(?:#.*)?\n)*([ \t]*)- ", text, flags=re.MULTILINE)
        indent = first_item.group(1) if first_item else ""
        new_text = text.rstrip("\n") + "\n\n" + "".join(indent + line for line in item.splitlines(True))
    elif entry.name in names and (span := _entry_span(text, entry.name)) is not None:
        # replace the entry's own lines: the other entries keep their layout and comments
        start, end, indent = span
        block = "".join(indent + line for line in item.splitlines(True))
        new_text = text[:start] + block + ("\n" if text[end:].strip() else "") + text[end:].lstrip("\n")
    else:
        data = data if isinstance(data, dict) else {"version": 1}
        models = [m for m in data.get("models") or [] if m.get("name") != entry.name]
        data["models"] = models + [entry.to_mapping()]
        header = _header_comment(text) or "# TinyGroundingGPT model registry (written by `tinygg zoo add`).\n"
        new_text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new_text, encoding="utf-8")
    try:
        written = Registry.from_file(tmp)
        if entry.name not in written or len(written) != len(set(names) | {entry.name}):
            raise RegistryError(f"registry {path}: writing {entry.name!r} did not give the expected entries")
    except RegistryError:
        tmp.unlink()
        raise
    os.replace(tmp, path)
    return path
