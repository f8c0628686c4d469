"""Runs a list of items in as few onnxruntime calls as the shapes allow: one call per (model, shape) group."""

import time
from collections.abc import Callable

import numpy as np

from .interface import OUTPUTS, Item, Result, group
from .runtimes import OpenVinoModel
from .sessions import Sessions

OnCall = Callable[[str, int, float], None]  # (model, images, seconds) of each call, for the metrics
Model = Sessions | OpenVinoModel  # a loaded model on onnxruntime or OpenVINO: ``run(pixels, names)``


class Runner:
    """Each item's result, in item order, or the exception its group's call raised (its own, not the batch's)."""

    def __init__(self, models: dict[str, Model], on_call: OnCall | None = None) -> None:
        self.models, self.on_call = models, on_call

    def __call__(self, items: list[Item]) -> list[Result | Exception]:
        results: dict[int, Result | Exception] = {}
        for (name, _shape), idx in group(items, lambda item: (item.model, item.pixels.shape)).items():
            names = [o for o in OUTPUTS if any(o in items[i].outputs for i in idx)]
            batch = np.stack([items[i].pixels for i in idx])
            t = time.perf_counter()
            try:
                out = self.models[name].run(batch, names)
            except Exception as exc:
                for i in idx:
                    results[i] = exc
                continue
            seconds = time.perf_counter() - t
            if self.on_call is not None:
                self.on_call(name, len(idx), seconds)
            for j, i in enumerate(idx):
                results[i] = Result({o: out[o][j] for o in items[i].outputs}, seconds * 1e3, len(idx))
        return [results[i] for i in range(len(items))]
