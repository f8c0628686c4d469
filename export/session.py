"""The one way the export opens an ONNX file in onnxruntime: parity, reference statistics, runtime records, benches."""

from pathlib import Path

import onnxruntime as ort


def session(
    path: str | Path | bytes, providers: list | None = None, threads: int = 0, spinning: bool = True
) -> ort.InferenceSession:
    """A quiet session of a file (or a serialised model) on ``providers`` (CPU by default) with ``threads`` intra-op
    threads (0: onnxruntime's); ``spinning=False`` as the service runs it (idle threads sleep between calls)."""
    opts = ort.SessionOptions()
    opts.log_severity_level, opts.intra_op_num_threads = 3, threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, opts, providers=providers or ["CPUExecutionProvider"])
