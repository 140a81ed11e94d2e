"""LoRA adapters: llama.cpp's GGUF LoRA file format (read, write, check against a base), PEFT import, and the
versioned per-profile, per-application AdapterStore."""

from .lora_file import AdapterError, LoraAdapter
from .peft_import import import_peft
from .store import AdapterStore, AdapterVersion

__all__ = ["AdapterError", "AdapterStore", "AdapterVersion", "LoraAdapter", "import_peft"]
