"""On-device LoRA training (`[train]` extra: torch CPU, transformers, peft): a user's own records in the section 9
format, at the rank of the device's hardware profile, exported as a llama.cpp GGUF LoRA adapter."""

from .config import PEFT_TARGETS, TrainConfig
from .loop import StepInfo, TrainResult, build_examples, train_lora
from .model import TrainError

__all__ = ["PEFT_TARGETS", "StepInfo", "TrainConfig", "TrainError", "TrainResult", "build_examples", "train_lora"]
