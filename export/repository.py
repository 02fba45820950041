"""Writing new model versions into a Triton model repository."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from export.contract import MAX_BATCH_SIZE, ModelContract
from export.errors import PublishError, SchemaMismatchError
from features import schemas

CONFIG = "config.pbtxt"
MODEL_FILE = "model.onnx"
MODEL_CARD = "model_card.json"
# Triton only treats numeric directory names as versions, so a dot-prefixed
# staging directory next to them is never loaded half-written.
STAGING_PREFIX = ".staging-"
_SCHEMA_PARAM = re.compile(
    r'(key:\s*"feature_schema"\s*value:\s*\{\s*string_value:\s*")([^"]*)("\s*\})'
)
# The dims of the first (the only) input tensor.
_INPUT_DIMS = re.compile(
    r"(^input\s*\[\s*\{[^}]*?dims:\s*\[)([^\]]*)(\])", re.MULTILINE
)


def config_text(contract: ModelContract, feature_schema: str) -> str:
    """The config.pbtxt shared by every version of a model."""
    return f"""name: "{contract.name}"
platform: "onnxruntime_onnx"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{
    name: "{contract.input_name}"
    data_type: TYPE_FP32
    dims: [ {schemas.width(feature_schema)} ]
  }}
]
output [
  {{
    name: "{contract.output_name}"
    data_type: TYPE_FP32
    dims: [ {contract.output_width} ]
  }}
]
version_policy: {{ specific: {{ versions: [ 1 ] }} }}
instance_group [
  {{
    count: 1
    kind: KIND_CPU
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: 200
}}
parameters {{
  key: "feature_schema"
  value: {{ string_value: "{feature_schema}" }}
}}
"""


def config_feature_schema(config: Path) -> str:
    """The feature schema a model's config makes Triton (and the gateway) use."""
    match = _SCHEMA_PARAM.search(config.read_text())
    if match is None:
        raise SchemaMismatchError(f"{config} records no feature_schema parameter")
    return match.group(2)


def config_input_width(config: Path) -> int:
    """The width of the input tensor that a model's config declares."""
    match = _INPUT_DIMS.search(config.read_text())
    dims = re.findall(r"-?\d+", match.group(2)) if match else []
    if len(dims) != 1:
        raise SchemaMismatchError(f"{config} declares no one-dimensional input")
    return int(dims[0])


def schema_text(config_text: str, feature_schema: str) -> str:
    """The config with its input width and feature_schema set to the schema's."""
    width = schemas.width(feature_schema)
    text, dims = _INPUT_DIMS.subn(rf"\g<1> {width} \g<3>", config_text, count=1)
    text, params = _SCHEMA_PARAM.subn(rf"\g<1>{feature_schema}\g<3>", text, count=1)
    if not dims or not params:
        raise SchemaMismatchError(
            "config declares no input dims or no feature_schema parameter to rewrite"
        )
    return text


def version_feature_schema(model_dir: Path, version: int) -> str:
    """The feature schema version N was trained on.

    Its model card says; a version published without one (before cards
    recorded it) speaks the schema of the model's config.
    """
    card = model_dir / str(version) / MODEL_CARD
    if card.is_file():
        try:
            recorded = json.loads(card.read_text()).get("feature_schema")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise SchemaMismatchError(f"{card} is not a readable model card") from exc
        if recorded is not None:
            return str(recorded)
    return config_feature_schema(model_dir / CONFIG)


def ensure_config(
    model_dir: Path, contract: ModelContract, feature_schema: str
) -> Path:
    """Write the config if the model has none; else check it names our tensors.

    An existing config may speak another feature schema than the version
    being published: the config changes with the version when it goes live.
    """
    config = model_dir / CONFIG
    if not config.exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(config, config_text(contract, feature_schema).encode())
        return config
    text = config.read_text()
    for name in (contract.name, contract.input_name, contract.output_name):
        if f'"{name}"' not in text:
            raise SchemaMismatchError(f"{config} does not declare {name!r}")
    return config


def versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, payload: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomically(path: Path, payload: bytes) -> None:
    temporary = path.with_name(f"{STAGING_PREFIX}{uuid.uuid4().hex}-{path.name}")
    _write_file(temporary, payload)
    os.replace(temporary, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def _locked(model_dir: Path) -> Iterator[None]:
    """Serialise publishers of one model (flock on the directory itself)."""
    fd = os.open(model_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def publish_version(
    model_dir: Path, files_for: Callable[[int], Mapping[str, bytes]]
) -> Path:
    """Write version N+1 in one rename; never touch an existing version.

    ``files_for(version)`` gives the files of the new version directory.
    """
    if not (model_dir / CONFIG).is_file():
        raise PublishError(f"{model_dir} has no {CONFIG}; refusing to publish")

    with _locked(model_dir):
        version = max(versions(model_dir), default=0) + 1
        target = model_dir / str(version)
        files = files_for(version)
        if MODEL_FILE not in files:
            raise PublishError(f"a version needs {MODEL_FILE}, got {sorted(files)}")
        staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for name, payload in files.items():
                if "/" in name or name.startswith("."):
                    raise PublishError(f"bad file name for a version: {name!r}")
                _write_file(staging / name, payload)
            _fsync_dir(staging)
            if target.exists():
                raise PublishError(f"{target} already exists; refusing to overwrite")
            # rename(2) would replace an empty directory; the lock and the
            # check above keep a concurrent publisher from creating one.
            os.rename(staging, target)
            _fsync_dir(model_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target
