"""PyTorch definitions of the ResNet family, a name registry, and local checkpoint loading."""

from . import densenet, preact, resnet  # noqa: F401  (registers the builders)
from .checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint
from .registry import create, list_models, register

__all__ = [
    "CheckpointMismatch",
    "create",
    "list_models",
    "load_checkpoint",
    "register",
    "save_checkpoint",
]
