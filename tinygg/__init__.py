"""TinyGroundingGPT: compact grounding multimodal LLMs (CLIP + DINOv2 -> MLP -> Qwen2.5).

Importing the package registers the model with transformers' Auto classes, so a saved checkpoint loads
with ``AutoModelForImageTextToText.from_pretrained(dir)`` and ``AutoProcessor.from_pretrained(dir)``.
This is transformers' supported route for models that live outside its tree (no remote code needed).
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration import PRESETS, TinyGGConfig
from .modeling import TinyGGForConditionalGeneration, TinyGGModel
from .processor import TinyGGProcessor

__version__ = "0.1.0"

AutoConfig.register(TinyGGConfig.model_type, TinyGGConfig, exist_ok=True)
AutoModel.register(TinyGGConfig, TinyGGModel, exist_ok=True)
AutoModelForImageTextToText.register(TinyGGConfig, TinyGGForConditionalGeneration, exist_ok=True)
AutoProcessor.register(TinyGGConfig, TinyGGProcessor, exist_ok=True)

__all__ = ["PRESETS", "TinyGGConfig", "TinyGGForConditionalGeneration", "TinyGGModel", "TinyGGProcessor"]
