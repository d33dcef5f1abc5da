"""Fine-tuning (LoRA, QLoRA, full) on one process or under torchrun: `finetune(FinetuneConfig(...))`."""
from vla.train.config import FinetuneConfig, LoraSettings, OptimSettings
from vla.train.loop import finetune

__all__ = ["FinetuneConfig", "LoraSettings", "OptimSettings", "finetune"]
