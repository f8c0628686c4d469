"""The GPU check's CPU-testable parts: I/O-bound calls (the CUDA-graph lever's harness) give run()'s answer."""

import numpy as np

from export.gpu_check import bound_runner
from export.parity import images
from export.session import session
from tests.server import DEFAULT


def test_bound_runner_matches_a_plain_run() -> None:
    sess, x = session(DEFAULT / "model.onnx"), images((3, 112, 176))
    call = bound_runner(sess, x, 6, 128, stride=16, device="cpu")
    np.testing.assert_allclose(call(), sess.run(["logits"], {"pixels": x})[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(call(), call())  # the same buffers, called again
