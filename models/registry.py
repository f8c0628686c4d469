"""Name → builder registry, so every variant is one small registered function (as in timm)."""

from collections.abc import Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name."""
    if fn.__name__ in _BUILDERS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _BUILDERS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Every registered variant name, sorted."""
    return sorted(_BUILDERS)


def create(name: str, *, num_classes: int | None = None, **overrides) -> nn.Module:
    """Build a registered variant by name, e.g. ``create("resnet50", num_classes=10)``.

    Without ``num_classes`` the variant's own default applies: 1000 for ImageNet nets, 10 for CIFAR.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(list_models())}") from None
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    return builder(**overrides)
