"""What an export writes and the service reads: ``model.json``, typed once for both sides.

Pure Python (pydantic only), so the service can use it without torch and the export without bentoml.
"""

from .metadata import Crop, Full, ModelMetadata, Preprocessing, Runtime, cpu_isa, cpu_name, read, write

__all__ = ["Crop", "Full", "ModelMetadata", "Preprocessing", "Runtime", "cpu_isa", "cpu_name", "read", "write"]
