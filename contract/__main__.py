"""Regenerate ``contract/model.schema.json`` from the classes: ``python -m contract``."""

import json
from pathlib import Path

from .metadata import ModelMetadata

SCHEMA = Path(__file__).with_name("model.schema.json")

if __name__ == "__main__":
    SCHEMA.write_text(json.dumps(ModelMetadata.model_json_schema(), indent=2) + "\n")
    print(f"wrote {SCHEMA}")
