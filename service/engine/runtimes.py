"""Which CPU runtime serves a model: onnxruntime, or OpenVINO where the export measured it faster on this CPU.

``RESNET_RUNTIME=auto`` never guesses: it reads the model's export record (``runtimes`` in model.json) and
takes OpenVINO only where that record was made on a CPU with this one's instruction sets, shows it faster
than onnxruntime on the same file, and its top-1 agreement with onnxruntime on the export's parity images
is at least ``MIN_TOP1`` (the rule int8 has). Faster means beyond noise: by ``MARGIN``, or by the record's own
run-to-run spread where that is larger (records made before the spread was kept get the fixed margin); a tie stays
on onnxruntime. The GPU path is untouched: a model on CUDA stays there.
"""

import importlib.util
import logging
import threading

import numpy as np

from contract import ModelMetadata, Runtime, cpu_isa
from contract.metadata import OPENVINO, openvino_config

from ..catalog import Entry
from .sessions import Sessions, warm

log = logging.getLogger("resnet.engine")
MIN_TOP1 = 0.99
MARGIN = 0.10  # a speedup within 10 % of onnxruntime was seen to flip between export runs on a shared machine
ONNXRUNTIME = "onnxruntime"
CHOICES = ("auto", ONNXRUNTIME, *OPENVINO)


def choose(meta: ModelMetadata, setting: str, isa: list[str] | None = None) -> tuple[str, str]:
    """(runtime, why) for a model on this CPU."""
    if setting not in CHOICES:
        raise RuntimeError(f"RESNET_RUNTIME={setting!r}: expected one of {', '.join(CHOICES)}")
    if setting != "auto":
        return setting, "RESNET_RUNTIME"
    isa = cpu_isa() if isa is None else isa
    if not meta.runtimes:
        return ONNXRUNTIME, "no runtime record in its export (python -m export.runtimes measures one)"
    here = [r for r in meta.runtimes if r.isa == isa]
    if not here:
        return ONNXRUNTIME, f"its record is from a CPU with {meta.runtimes[0].isa}, this one has {isa}"
    fit = [r for r in here if r.top1 >= MIN_TOP1 and r.speedup() > 1 + margin(r)]
    if not fit:
        figures = ", ".join(f"{r.name} {r.speedup():.2f}× (needs {1 + margin(r):.2f}) top-1 {r.top1:.1%}" for r in here)
        return ONNXRUNTIME, f"no runtime faster beyond noise and agreeing ≥ {MIN_TOP1:.0%} ({figures})"
    best = max(fit, key=lambda r: r.speedup())
    return best.name, f"{best.speedup():.2f}× onnxruntime, top-1 agreement {best.top1:.1%} (its export record)"


def margin(record: Runtime) -> float:
    """How much faster than onnxruntime a record must show a runtime to be: beyond ``MARGIN`` and its own spread."""
    return max(MARGIN, record.spread or 0.0)


class OpenVinoModel:
    """One model compiled by OpenVINO for this CPU at one precision, serving as ``Sessions`` does on a CPU.

    OpenVINO takes the graph's dynamic shapes as they come (no compiled model per bucket): every bucket
    is run once before the engine says it is ready, as onnxruntime's are.
    """

    def __init__(self, sessions: Sessions, runtime: str, threads: int) -> None:
        import openvino as ov  # only where a model runs on it: a GPU image need not carry it

        self.entry, self.meta = sessions.entry, sessions.meta
        config = openvino_config(runtime, threads)  # as the export's record measured it
        self.compiled = ov.Core().compile_model(str(self.entry.path / "model.onnx"), "CPU", config)
        self.requests = threading.local()  # an infer request per engine thread: one takes one call at a time
        self.provider = f"OpenVINO CPU ({runtime})"

    def warm_shapes(self) -> list[tuple[int, int, int]]:
        return [(1, h, w) for h, w in self.meta.preprocessing.buckets()]

    def warmup(self) -> int:
        return warm(self, self.warm_shapes())

    def run(self, pixels: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        if (request := getattr(self.requests, "request", None)) is None:
            request = self.requests.request = self.compiled.create_infer_request()
        request.infer({"pixels": pixels})
        return {name: request.get_tensor(name).data.copy() for name in names}


def load(entry: Entry, sessions: Sessions, setting: str, threads: int) -> Sessions | OpenVinoModel:
    """The model on the runtime ``setting`` chooses, logged loudly with the reason; CUDA models stay on CUDA."""
    if sessions.provider != "CPUExecutionProvider":
        return sessions
    runtime, why = choose(entry.meta, setting)
    if runtime != ONNXRUNTIME and setting == "auto" and importlib.util.find_spec("openvino") is None:
        runtime, why = ONNXRUNTIME, f"{runtime} is faster here, but the openvino package is not installed"
    log.warning("!!! model %s on %s: %s !!!", entry.tag, runtime, why)
    return sessions if runtime == ONNXRUNTIME else OpenVinoModel(sessions, runtime, threads)
