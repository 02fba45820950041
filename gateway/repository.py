"""The model repository on disk, when the gateway can see it (MODEL_REPOSITORY).

Triton's API says which versions are loaded, not what is on its disk nor what
a version's model card says, and the gateway cannot reach Triton's disk in
general. Where the repository is mounted for the gateway too (the local stack,
docker compose), ``GET /model/info`` adds the versions on disk and the live
version's training metrics from its ``model_card.json``; elsewhere it says
``null`` for both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def versions_on_disk(repository: Path, model: str) -> list[str]:
    model_dir = repository / model
    if not model_dir.is_dir():
        return []
    found = [p.name for p in model_dir.iterdir() if p.name.isdigit() and p.is_dir()]
    return sorted(found, key=int)


def training_summary(
    repository: Path, model: str, version: str
) -> dict[str, Any] | None:
    """What a version's model card says of its training and validation."""
    try:
        card = json.loads(
            (repository / model / version / "model_card.json").read_text()
        )
    except (OSError, ValueError):
        return None
    training = card.get("training", {})
    validation = card.get("validation", {})
    return {
        "run": training.get("run"),
        "trained_at": training.get("trained_at"),
        "rows": training.get("rows"),
        "feature_schema": card.get("feature_schema"),
        "validation_metrics": validation.get("metrics"),
    }
