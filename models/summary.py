"""Parameter counts and GFLOPs per variant, computed on the meta device (no memory, no time)."""

import torch
from torch import nn

from .registry import create, list_models


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gflops(model: nn.Module, size: int = 224) -> float:
    """Multiply-accumulates of convs and linears at ``size``², times two, in billions."""
    macs = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            k = module.weight[0].numel()  # (cin / groups) · kh · kw
            macs += output.numel() * k
        else:
            macs += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    for h in handles:
        h.remove()
    return 2 * macs / 1e9


def table() -> str:
    """Markdown table of every registered variant, for the README."""
    rows = [
        "| model | params | GFLOPs @224 | min input | default input |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in list_models():
        with torch.device("meta"):
            model = create(name).eval()
        rows.append(
            f"| `{name}` | {count_params(model):,} | {gflops(model):.2f} | "
            f"{model.min_input_size} | {model.default_input_size} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
