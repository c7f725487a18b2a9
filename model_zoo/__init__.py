"""Model zoo: a typed registry of components and TinyGroundingGPT checkpoints, verified downloads
(Hugging Face at pinned revisions, or HTTP with resume), model cards and publishing.

    from model_zoo import resolve_model
    path = resolve_model("Qwen/Qwen2.5-1.5B-Instruct")   # or a checkpoint directory

CLI: ``tinygg zoo list | info | download | verify | add | card | publish | convert``.
"""

from .add_checkpoint import add
from .hub_publish import PublishError, publish
from .integrity import ChecksumMismatchError, PickleCheckpointError, VerifyReport
from .model_card import card
from .registry import Entry, Registry, RegistryError, UnknownModelError, load_registry
from .resolve import ModelNotAvailableError, download, resolve_model, verify

__all__ = [
    "ChecksumMismatchError",
    "Entry",
    "ModelNotAvailableError",
    "PickleCheckpointError",
    "PublishError",
    "Registry",
    "RegistryError",
    "UnknownModelError",
    "VerifyReport",
    "add",
    "card",
    "download",
    "load_registry",
    "publish",
    "resolve_model",
    "verify",
]
