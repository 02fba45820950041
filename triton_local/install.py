"""Locate the Triton server shipped inside the nvidia-pytriton wheel."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

STUB_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


class ServerNotInstalledError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerInstall:
    """Files of one nvidia-pytriton install that the launcher needs."""

    root: Path  # the folder that holds pytriton/ and nvidia_pytriton.libs/

    @property
    def binary(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    @property
    def libs_dir(self) -> Path:
        return self.root / "nvidia_pytriton.libs"

    @property
    def python_backend_dir(self) -> Path:
        return self.root / "pytriton" / "tritonserver" / "backends" / "python"

    @property
    def stub(self) -> Path:
        return (
            self.root
            / "pytriton"
            / "tritonserver"
            / "python_backend_stubs"
            / STUB_PYTHON
            / "triton_python_backend_stub"
        )

    def missing(self) -> list[Path]:
        needed = [
            self.binary,
            self.libs_dir,
            self.python_backend_dir / "libtriton_python.so",
            self.stub,
        ]
        return [path for path in needed if not path.exists()]


def candidate_roots(python_env: Path) -> list[Path]:
    site = python_env / "lib" / f"python{STUB_PYTHON}" / "site-packages"
    return [python_env / "tritonserver", site]


def find_server(python_env: Path) -> ServerInstall:
    """The install named by TRITON_SERVER_ROOT, else the first one found."""
    explicit = os.environ.get("TRITON_SERVER_ROOT")
    roots = [Path(explicit)] if explicit else candidate_roots(python_env)
    for root in roots:
        install = ServerInstall(root)
        if not install.missing():
            return install

    tried = ", ".join(str(root) for root in roots)
    raise ServerNotInstalledError(
        f"no tritonserver from nvidia-pytriton found (looked in: {tried}); "
        "install it with: pip install --no-deps --target "
        f"{python_env / 'tritonserver'} nvidia-pytriton==0.7.0"
    )
