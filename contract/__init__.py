"""What an export writes and the service reads: ``model.json``, typed once for both sides.

Pydantic; numpy for the out-of-distribution score and Pillow for the pixels a model is given (``pixels``), which
both sides compute alike; and the thread plan of a process (``threads``). The service uses it without torch and the
export without bentoml.
"""

from .metadata import Crop, Full, ModelMetadata, Preprocessing, Runtime, cpu_isa, cpu_name, read, write
from .reference import OodScore, Reference

__all__ = [
    "Crop",
    "Full",
    "ModelMetadata",
    "OodScore",
    "Preprocessing",
    "Reference",
    "Runtime",
    "cpu_isa",
    "cpu_name",
    "read",
    "write",
]
