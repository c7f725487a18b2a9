"""Load the prompt and question templates shipped as text files in ``data_pipeline/prompts/``.

VLM prompts are whole files with ``string.Template`` placeholders (``$objects``); question templates are
one template per line, and a sample picks one of them with a seeded random generator so a rerun
produces the same data. A directory given with ``--prompts`` overrides the shipped files one by one.
"""

from __future__ import annotations

import random
from pathlib import Path
from string import Template

SHIPPED = Path(__file__).resolve().parent / "prompts"


class Templates:
    """Prompt files from ``override`` (if present there) or from the shipped directory."""

    def __init__(self, override: str | Path | None = None):
        self.override = Path(override) if override else None
        if self.override is not None and not self.override.is_dir():
            raise FileNotFoundError(f"--prompts: {self.override} is not a directory")

    def _path(self, name: str) -> Path:
        if self.override is not None and (self.override / name).is_file():
            return self.override / name
        path = SHIPPED / name
        if not path.is_file():
            raise FileNotFoundError(f"prompt template {name!r} not found in {SHIPPED}")
        return path

    def text(self, name: str) -> str:
        return self._path(name).read_text(encoding="utf-8").strip()

    def prompt(self, name: str, **values: object) -> str:
        """Fill a whole-file prompt; a missing placeholder raises ``KeyError`` naming the file."""
        try:
            return Template(self.text(name)).substitute({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise KeyError(f"{self._path(name)}: no value given for placeholder ${exc.args[0]}") from None

    def lines(self, name: str) -> list[str]:
        lines = [ln.strip() for ln in self.text(name).splitlines() if ln.strip()]
        if not lines:
            raise ValueError(f"{self._path(name)}: no templates (one per line expected)")
        return lines

    def question(self, name: str, rng: random.Random, **values: object) -> str:
        """One line of ``questions/<name>.txt``, chosen by ``rng``, filled with ``values``."""
        line = rng.choice(self.lines(f"questions/{name}.txt"))
        try:
            return Template(line).substitute({k: str(v) for k, v in values.items()})
        except KeyError as exc:
            raise KeyError(
                f"{self._path(f'questions/{name}.txt')}: template {line!r} uses ${exc.args[0]}, "
                f"which this family does not provide"
            ) from None
