"""Run the gateway: python -m gateway (settings from the environment)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.config import get_settings


def _multiprocess_metrics_dir() -> str:
    """A fresh folder where every worker writes its Prometheus samples."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        # Samples of an earlier run would be summed with this one's.
        shutil.rmtree(path, ignore_errors=True)
    else:
        path = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def main() -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": settings.log_level.lower(),
        "timeout_graceful_shutdown": 10,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    # Each worker process builds its own app (and pools) from the environment.
    _multiprocess_metrics_dir()
    uvicorn.run(
        "gateway.app:create_app", factory=True, workers=settings.workers, **options
    )


if __name__ == "__main__":
    main()
