"""What the front asks of an engine and what it gets back, whichever engine it is (in process or remote)."""

from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..rollout import Plan

OUTPUTS = ("logits", "embedding", "features")  # every model's graph outputs
SPARE = 2  # the protocol's request ``priority`` of shadow copies (Triton's levels: 1 is the highest; 0, unset)


class Item(NamedTuple):
    """One image for one model, and the graph outputs wanted for it (a subset of ``OUTPUTS``)."""

    model: str  # the store tag, name:version
    pixels: np.ndarray  # (H, W, 3) uint8
    outputs: tuple[str, ...] = ("logits",)
    shadow: bool = False  # a rollout's copy: it yields to live work (engine/batcher.py)


class Result(NamedTuple):
    """One image's wanted outputs, and the model call it was part of."""

    outputs: dict[str, np.ndarray]
    model_ms: float  # that call's time
    batch_size: int  # images in that call


class Engine(Protocol):
    """An engine: the models behind the Open Inference Protocol's tensor interface."""

    async def infer(self, items: list[Item]) -> list[Result]:
        """Results in item order (one call's items are all shadow copies or none); raises EngineUnavailable when it
        cannot take them now."""
        ...

    async def load(self, tag: str, default: bool, plan: Plan | None = None) -> None:
        """``tag`` (name:version) loaded and warm, or the reason it cannot be (``default`` and ``plan``: what the
        front's repository call asked, for engines that keep a set of their own)."""
        ...

    async def apply(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        """Serve exactly ``tags`` from now on; those it serves (warm) once it returns."""
        ...

    async def ready(self) -> bool: ...
    async def providers(self) -> dict[str, str]: ...
    async def close(self) -> None: ...


def group(items: list, key: Callable[[Any], tuple]) -> dict[tuple, list[int]]:
    """The indices of ``items`` by ``key``: the images one model call (or one engine request) can take."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[key(item)].append(i)
    return groups
