"""TinyGroundingGPT: compact grounding multimodal LLMs (CLIP + DINOv2 -> MLP -> Qwen2.5)."""

__version__ = "0.1.0"
