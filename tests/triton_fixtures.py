"""A private Triton for integration tests, on free ports and a tmp repository.

Import the fixtures from tests/conftest.py:
    from triton_fixtures import triton_repository, triton_server  # noqa: F401
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export import live
from export.repository import schema_text, version_feature_schema
from features.schemas import BASIC_SCHEMA_ID
from triton_local.server import LaunchOptions, Ports, TritonHandle, start_triton

COMMITTED_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
FEATURE_WIDTH = 26  # txn-basic-v1
# Model name -> (output name, weight seed) of the tiny stand-in models.
STAND_INS = {
    "anomaly_autoencoder": ("anomaly_score", 1),
    "risk_classifier": ("risk_probability", 2),
}


def write_linear_onnx(
    path: Path,
    output_name: str,
    seed: int,
    width: int = FEATURE_WIDTH,
    input_name: str = "features",
    batch_dim: str | int = "batch",
) -> Path:
    """sigmoid(features @ W + b), FP32 [batch, width] -> [batch, 1]."""
    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(
        rng.normal(size=(width, 1)).astype(np.float32), "W"
    )
    bias = numpy_helper.from_array(rng.normal(size=(1,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], [output_name]),
        ],
        "linear",
        [
            helper.make_tensor_value_info(
                input_name, TensorProto.FLOAT, [batch_dim, width]
            )
        ],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch_dim, 1])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_test_repository(target: Path) -> Path:
    """The committed configs with stand-in ONNX models as version 1, on
    txn-basic-v1 (FEATURE_WIDTH inputs) whatever the committed models speak."""
    for config in sorted(COMMITTED_REPOSITORY.glob("*/config.pbtxt")):
        model_dir = target / config.parent.name
        (model_dir / "1").mkdir(parents=True)
        # The committed configs name their live version; here the newest
        # version directory is served, as tests publish stand-ins freely.
        text = re.sub(
            r"^version_policy:.*$",
            "version_policy: { latest: { num_versions: 1 } }",
            config.read_text(),
            flags=re.MULTILINE,
        )
        text = schema_text(text, BASIC_SCHEMA_ID)
        (model_dir / "config.pbtxt").write_text(text)
    for model, (output, seed) in STAND_INS.items():
        write_linear_onnx(target / model / "1" / "model.onnx", output, seed)
    return target


def copy_basic_repository(target: Path, live_version: int = 2) -> Path:
    """The committed repository with versions 1 and 2 of each model alone,
    version 2 live, as the release tests expect it, whatever versions have
    been published or made live since."""
    keep = {str(v) for v in range(1, live_version + 1)}

    def ignore(directory: str, names: list[str]) -> list[str]:
        if Path(directory) == COMMITTED_REPOSITORY:
            return [live.RELEASES_LOG]
        return [n for n in names if n.isdigit() and n not in keep]

    shutil.copytree(COMMITTED_REPOSITORY, target, ignore=ignore)
    schemas = set()
    for model in STAND_INS:
        model_dir = target / model
        schema = version_feature_schema(model_dir, live_version)
        schemas.add(schema)
        config = model_dir / "config.pbtxt"
        config.write_text(
            schema_text(live.policy_text(config.read_text(), live_version), schema)
        )
    ensemble = target / live.ENSEMBLE / "config.pbtxt"
    if ensemble.is_file() and len(schemas) == 1:
        ensemble.write_text(schema_text(ensemble.read_text(), schemas.pop()))
    return target


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports() -> Ports:
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    grpc, http, metrics = sorted(ports)
    return Ports(grpc=grpc, http=http, metrics=metrics)


@pytest.fixture(scope="session")
def triton_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_repository(tmp_path_factory.mktemp("triton") / "repository")


@pytest.fixture(scope="session")
def triton_server(
    triton_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonHandle]:
    """A private Triton polling `triton_repository` every second."""
    run_dir = tmp_path_factory.mktemp("triton-run")
    options = LaunchOptions(
        repository=triton_repository,
        run_dir=run_dir,
        ports=free_ports(),
        control_mode="poll",
        poll_secs=1,
    )
    handle = start_triton(options)
    try:
        yield handle
    finally:
        handle.stop()
