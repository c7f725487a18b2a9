"""Which parameters train: frozen / full per component, LoRA on the LLM (PEFT), merged on export."""

from __future__ import annotations

import logging

from torch import nn

from .config import Freeze, Lora

logger = logging.getLogger(__name__)

LLM_PREFIX = "model.language_model."


def apply_freeze(model: nn.Module, freeze: Freeze, lora: Lora) -> nn.Module:
    """Set ``requires_grad`` per component; wrap with LoRA when ``freeze.llm == "lora"``.

    Returns the model to train (a ``PeftModel`` for LoRA). The LM head and input embeddings follow the LLM.
    """
    base = model
    parts = {
        "vision": [base.model.vision_tower],
        "projector": [base.model.multi_modal_projector],
        "llm": [base.model.language_model, base.lm_head],
    }
    for name, modules in parts.items():
        trainable = getattr(freeze, name) == "full"
        for m in modules:
            m.requires_grad_(trainable)
    if freeze.llm == "lora":
        from peft import LoraConfig, get_peft_model

        targets = "|".join(lora.target_modules)
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                            target_modules=rf"{LLM_PREFIX.replace('.', '[.]')}.*[.]({targets})")
        model = get_peft_model(model, config)
        # PEFT freezes everything but the adapters: give the other parts back their setting.
        for name in ("vision", "projector"):
            if getattr(freeze, name) == "full":
                for m in parts[name]:
                    m.requires_grad_(True)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info("trainable parameters: %.2fM of %.2fM (vision=%s projector=%s llm=%s)", n_train / 1e6,
                n_all / 1e6, freeze.vision, freeze.projector, freeze.llm)
    return model


def merge_for_export(model: nn.Module) -> nn.Module:
    """The plain model with LoRA weights merged in (a no-op for models without adapters)."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model
