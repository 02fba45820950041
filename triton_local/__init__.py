"""Local Triton without Docker: launcher and Python-based onnxruntime backend."""

from triton_local.server import (
    LaunchOptions,
    Ports,
    TritonAlreadyRunningError,
    TritonHandle,
    TritonStartError,
    running,
    start_triton,
)

__all__ = [
    "LaunchOptions",
    "Ports",
    "TritonAlreadyRunningError",
    "TritonHandle",
    "TritonStartError",
    "running",
    "start_triton",
]
