"""The layout of a training run directory, shared with the export step."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "run.json"
AUTOENCODER = "autoencoder.pt"
CLASSIFIER_KERAS = "classifier.keras"
CLASSIFIER_SAVEDMODEL = "classifier_savedmodel"
PARITY_FEATURES = "parity_features.npy"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PR_CURVE_PNG = "precision_recall.png"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def manifest(self) -> dict[str, Any]:
        file = self.path / MANIFEST
        if not file.is_file():
            raise FileNotFoundError(f"{self.path} is not a training run: no {MANIFEST}")
        return json.loads(file.read_text())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        (self.path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
