"""JPEG decoding on the GPU with nvImageCodec, as an option (RESNET_DECODER=nvimgcodec); Pillow otherwise.

On a GPU host Pillow's decode is most of a request's CPU time, and the CPU caps throughput.
nvImageCodec (``pip install nvidia-nvimgcodec-cu13``, not part of the CPU install) decodes on the
card; the upright RGB pixels come back to the host and are resized as before. Where it cannot be
loaded the service says so once in the log and decodes with Pillow.
"""

import logging
from collections.abc import Callable

import numpy as np
from PIL import Image

log = logging.getLogger("resnet.front")
Decode = Callable[[bytes], Image.Image]  # encoded JPEG → upright RGB image


def nvimgcodec() -> Decode:
    """nvImageCodec's decoder (EXIF orientation applied, RGB out); raises where it cannot run."""
    from nvidia import nvimgcodec as nv  # optional: only on GPU hosts that installed it

    decoder = nv.Decoder()

    def decode(data: bytes) -> Image.Image:
        return Image.fromarray(np.asarray(decoder.decode(data).cpu()), "RGB")

    return decode


def jpeg_decoder(name: str) -> Decode | None:
    """The JPEG decoder the setting names; None means Pillow (the default, and the logged fallback)."""
    if name == "pillow":
        return None
    if name != "nvimgcodec":
        raise ValueError(f"RESNET_DECODER={name!r}: expected pillow or nvimgcodec")
    try:
        return nvimgcodec()
    except Exception as exc:  # not installed, no CUDA device, no driver: Pillow still works
        log.warning(
            "!!! RESNET_DECODER=nvimgcodec unavailable (%s: %s): decoding JPEG with Pillow !!!", type(exc).__name__, exc
        )
        return None
