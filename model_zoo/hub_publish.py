"""Push a checkpoint to the Hugging Face Hub with its model card (``tinygg zoo publish NAME --repo-id``).

Needs credentials (``HF_TOKEN``, or ``hf auth login``); without them :class:`PublishError` says so
before anything is sent. Only safetensors, configs and tokenizer files are uploaded (never pickle
weights, never hidden files); a README.md is generated with :func:`model_zoo.model_card.card` unless the
directory has one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .integrity import list_model_files, refuse_pickle_checkpoint
from .model_card import card
from .registry import Registry, is_pickle_file, load_registry
from .resolve import resolve_model

logger = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """Publishing is impossible as asked (no credentials, nothing to upload)."""


@dataclass
class PublishPlan:
    """What :func:`publish` sends: the directory, the files from it, and the README text."""

    directory: Path
    files: list[str]
    readme: str | None  # generated card, or None when the directory has its own README.md


def plan_publish(
    name_or_dir: str, *, eval_json: Iterable[str | Path] = (), registry: Registry | None = None
) -> PublishPlan:
    """Decide what to upload, without any network access."""
    reg = registry if registry is not None else load_registry()
    directory = resolve_model(name_or_dir, download=False, registry=reg)
    refuse_pickle_checkpoint(directory)
    files = [f for f in list_model_files(directory) if not is_pickle_file(f)]
    if not any(f.endswith(".safetensors") for f in files):
        raise PublishError(f"{directory}: no *.safetensors file to publish")
    readme = None if "README.md" in files else card(name_or_dir, eval_json, registry=reg)
    return PublishPlan(directory, files, readme)


def publish(
    name_or_dir: str,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    eval_json: Iterable[str | Path] = (),
    commit_message: str | None = None,
    registry: Registry | None = None,
) -> str:
    """Create (if needed) ``repo_id`` and upload the checkpoint and its card; returns the commit URL."""
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise PublishError(
            "no Hugging Face credentials: set HF_TOKEN or run `hf auth login` (a token with write access "
            f"to {repo_id.split('/')[0]!r}), then publish again"
        )
    plan = plan_publish(name_or_dir, eval_json=eval_json, registry=registry)
    api = HfApi(token=token, endpoint=os.environ.get("HF_ENDPOINT") or None)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    message = commit_message or f"Upload {Path(str(name_or_dir)).name} with tinygg zoo publish"
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(plan.directory), allow_patterns=plan.files, commit_message=message
    )
    if plan.readme is not None:
        info = api.upload_file(
            path_or_fileobj=plan.readme.encode("utf-8"),
            path_in_repo="README.md",
            repo_id=repo_id,
            commit_message="Add model card (tinygg zoo card)",
        )
    url = getattr(info, "commit_url", None) or str(info)
    logger.info("published %s to %s", plan.directory, url)
    return url
