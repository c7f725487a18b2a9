"""A training stage as data: which parts train, from which checkpoint, on which data, with which settings.

A YAML file sets the fields of :class:`TrainConfig`; ``key=value`` overrides (dotted for nested fields:
``freeze.llm=lora``, ``lora.r=16``) come after it on the command line. Two shortcuts:

* ``preset=NAME`` starts from a fresh stage-0 model of that preset (same as ``init=preset:NAME``);
* ``data=FILE[,FILE...]`` replaces the data mixture by those files (ratio 1, images next to each file);
* ``image_root=DIR`` sets the image folder of every data source.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..data.dataset import DataSource

FreezeMode = Literal["frozen", "full", "lora"]


@dataclass
class Freeze:
    """Per component: ``frozen`` (no gradients), ``full`` (all weights train) or ``lora`` (LLM only)."""

    vision: FreezeMode = "frozen"
    projector: FreezeMode = "full"
    llm: FreezeMode = "full"

    def __post_init__(self) -> None:
        for name in ("vision", "projector", "llm"):
            value = getattr(self, name)
            allowed = ("frozen", "full", "lora") if name == "llm" else ("frozen", "full")
            if value not in allowed:
                raise ValueError(f"freeze.{name}: expected one of {', '.join(allowed)}; got {value!r}")
        if (self.vision, self.projector, self.llm) == ("frozen", "frozen", "frozen"):
            raise ValueError("freeze: every part is frozen, nothing would train")


@dataclass
class Lora:
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])


@dataclass
class TrainConfig:
    """One training stage. Batch size is global (the paper's numbers); gradient accumulation is derived."""

    stage: str = "custom"
    init: str = "preset:tiny"  # checkpoint dir, zoo name, or preset:NAME for a fresh stage-0 model
    init_embed_std: float | None = None  # preset init only: token embeddings drawn at this std (tinygg.build)
    init_image_token_merge: int = 1  # preset init only: one LLM token per k x k patches (TinyGGConfig)
    data: list[DataSource] = field(default_factory=list)
    output_dir: str = "runs/custom"
    freeze: Freeze = field(default_factory=Freeze)
    lora: Lora = field(default_factory=Lora)
    # optimisation (paper Table 6 defaults: cosine, warm-up 0.03, no weight decay)
    batch_size: int = 32
    per_device_batch_size: int = 4
    learning_rate: float = 2e-5
    num_epochs: float = 1.0
    max_steps: int = -1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    # precision and speed
    bf16: str | bool = "auto"  # auto: on where the device supports it
    tf32: bool | None = None
    gradient_checkpointing: bool = False
    attn_implementation: str = "auto"  # auto: flash_attention_2 when installed on GPU, else sdpa
    group_by_length: bool = True
    feature_cache: str | bool = "auto"  # auto: on when the vision towers are frozen
    feature_cache_dir: str | None = None
    max_length: int = 2048
    dataloader_workers: int = 0
    # answer-gap curriculum (docs/demo_recipe.md section 15): in samples whose user turn ends with <image>, the
    # answer first follows the image after `answer_gap_start` template tokens (negative: with its own first tokens
    # left out too, -2 turns "[0.123" into ".123"), then one token more comes back every `answer_gap_every` steps
    # (the first at step `answer_gap_from`, default answer_gap_every) until the full template; 0 = off
    answer_gap_every: int = 0
    answer_gap_from: int = 0
    answer_gap_start: int = 0
    # bookkeeping
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int = 2
    resume: bool = True
    deepspeed: str | None = None
    use_cpu: bool = False
    skip_invalid: bool = False
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.batch_size % self.per_device_batch_size:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of per_device_batch_size "
                             f"{self.per_device_batch_size}")
        if self.lr_scheduler not in ("cosine", "linear", "constant", "constant_with_warmup"):
            raise ValueError(f"lr_scheduler: unknown {self.lr_scheduler!r}")
        fresh_only = {"init_embed_std": self.init_embed_std is not None,
                      "init_image_token_merge": self.init_image_token_merge != 1}
        for name, is_set in fresh_only.items():  # settings of a model built here, not of a loaded checkpoint
            if is_set and not self.init.startswith("preset:"):
                raise ValueError(f"{name} applies to a fresh model (init=preset:NAME); init is {self.init!r}")
        if self.answer_gap_every < 0 or self.answer_gap_from < 0:
            raise ValueError("answer_gap_every and answer_gap_from must be >= 0")
        if self.answer_gap_every and self.max_steps <= 0:
            raise ValueError("answer_gap_every needs max_steps (the curriculum must end with the full template "
                             "before training does)")
        if self.freeze.llm == "lora" and self.lora.r <= 0:
            raise ValueError("lora.r must be positive")

    def answer_gap_at(self, step: int, full: int) -> int | None:
        """Template tokens kept between the image and the answer at ``step`` (``None``: the full template, or no
        curriculum); ``full`` is the separator's length."""
        if not self.answer_gap_every:
            return None
        gap = gap_schedule(step, self.answer_gap_start, self.answer_gap_from or self.answer_gap_every,
                           self.answer_gap_every)
        return None if gap >= full else gap

    def answer_gap_end(self, full: int) -> int:
        """The first step trained with the full template again."""
        return (self.answer_gap_from or self.answer_gap_every) + (full - 1 - self.answer_gap_start) * \
            self.answer_gap_every

    @property
    def uses_feature_cache(self) -> bool:
        if self.feature_cache == "auto":
            return self.freeze.vision == "frozen"
        if self.feature_cache and self.freeze.vision != "frozen":
            raise ValueError("feature_cache=true needs freeze.vision=frozen (cached features of training towers "
                             "would go stale)")
        return bool(self.feature_cache)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def gap_schedule(step: int, first: int, start: int, every: int) -> int:
    """A gap curriculum (the answer-gap one here, the binding toy's in scripts/experiments): ``first`` until step
    ``start``, then one more at ``start`` and one more every ``every`` steps after it (uncapped)."""
    return first if step < start else first + 1 + (step - start) // every


def _coerce(text: str) -> Any:
    """A command-line value as YAML would read it (numbers, booleans, null, lists)."""
    return yaml.safe_load(text) if text != "" else ""


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in names]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(names), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{where}: unknown field {unknown[0]!r}{hint}")
    kwargs = {}
    for k, v in values.items():
        sub = {"freeze": Freeze, "lora": Lora}.get(k) if cls is TrainConfig else None
        if sub is not None:
            kwargs[k] = _build(sub, v or {}, f"{where}: {k}")
        elif k == "data" and cls is TrainConfig:
            kwargs[k] = [_data_source(d, f"{where}: data[{i}]") for i, d in enumerate(v or [])]
        else:
            kwargs[k] = _typed(v, names[k].type, f"{where}: {k}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


def _typed(value: Any, annotation: Any, where: str) -> Any:
    """YAML reads ``1e-3`` as a string (YAML 1.1 wants ``1.0e-3``): convert by the field's declared type."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if isinstance(value, str) and kind in ("float", "int"):
        try:
            return float(value) if kind == "float" else int(float(value))
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _data_source(d: Any, where: str) -> DataSource:
    if isinstance(d, str):
        return DataSource(path=d)
    if not isinstance(d, dict) or "path" not in d:
        raise ValueError(f"{where}: expected {{path, image_root, ratio}} or a path; got {d!r}")
    return _build(DataSource, d, where)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file plus ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file not found: {path}")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of fields at the top level")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value (e.g. max_steps=20)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key == "preset":
            values["init"] = f"preset:{raw}"
            continue
        if key == "data":
            values["data"] = [{"path": p} for p in raw.split(",") if p]
            continue
        if key == "image_root":  # for every data source
            values.setdefault("_image_root", raw)
            continue
        target = values
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = _coerce(raw)
    root = values.pop("_image_root", None)
    if root is not None:
        values["data"] = [dict(d, image_root=root) if isinstance(d, dict) else {"path": d, "image_root": root}
                          for d in values.get("data", [])]
    return _build(TrainConfig, values, str(path or "overrides"))


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
