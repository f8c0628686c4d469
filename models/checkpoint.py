"""Load local checkpoints (torchvision ``.pth`` or ``safetensors``) strictly, with clear refusals."""

import re
from pathlib import Path

import torch
from torch import nn

# torchvision's DenseNet checkpoints predate module renaming: "norm.1" is today's "norm1".
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


class CheckpointMismatch(ValueError):
    """A checkpoint whose keys or shapes do not fit the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from ``.safetensors`` or a torch pickle, never executing arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointMismatch(f"{path.name} is not a readable torch checkpoint: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatch(f"{path.name} does not hold a state_dict of tensors")
    return state


def remap_legacy_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision's legacy DenseNet keys ("norm.1.weight" → "norm1.weight")."""
    out = {}
    for key, value in state.items():
        m = _DENSENET_LEGACY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def check_compatible(model: nn.Module, state: dict[str, torch.Tensor], limit: int = 5) -> None:
    """Raise ``CheckpointMismatch`` naming the first missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    if problems:
        raise CheckpointMismatch("checkpoint does not fit the model: " + "; ".join(problems))


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` with ``strict=True`` semantics; returns the model."""
    state = remap_legacy_keys(read_state_dict(path))
    check_compatible(model, state)
    model.load_state_dict(state, strict=True)
    return model


def save_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Write the model's tensors as ``safetensors`` (or a torch pickle for ``.pth``)."""
    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
