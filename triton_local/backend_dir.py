"""Assemble the backend directory that tritonserver is pointed at."""

from __future__ import annotations

import shutil
from pathlib import Path

from triton_local.install import ServerInstall

ONNXRUNTIME_BACKEND = Path(__file__).resolve().parent / "backend" / "onnxruntime"


def prepare_backend_dir(install: ServerInstall, target: Path) -> Path:
    """Create `target` with the Python backend and our `onnxruntime` backend.

    The stub must sit next to libtriton_python.so, which finds it there; both
    are copied because their RPATH points into the wheel's layout, which
    LD_LIBRARY_PATH replaces.
    """
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in sorted(install.python_backend_dir.iterdir()):
        if source.is_file():
            _copy_if_changed(source, python_dir / source.name)
    _copy_if_changed(install.stub, python_dir / install.stub.name)

    link = target / "onnxruntime"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(ONNXRUNTIME_BACKEND, target_is_directory=True)
    return target


def _copy_if_changed(source: Path, destination: Path) -> None:
    if destination.exists():
        same_size = destination.stat().st_size == source.stat().st_size
        if same_size and destination.stat().st_mtime >= source.stat().st_mtime:
            return
    # A new inode, so that a running server keeps its mapped copy intact.
    staging = destination.with_name(destination.name + ".tmp")
    shutil.copy2(source, staging)
    staging.replace(destination)
