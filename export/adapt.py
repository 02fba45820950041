"""Publish a model version again, reading a wider feature schema.

``python -m export.adapt --model M --version N --to-schema txn-history-v1``

A schema whose columns start with another schema's columns (``txn-history-v1``
starts with the 26 columns of ``txn-basic-v1``) can feed a model trained on the
narrower one: a ``Slice`` in front of the graph keeps the first columns and
the rest of the graph is untouched, so the new version scores every
transaction exactly as the source version does (checked on real rows before
publishing). This lets models of one pipeline (and the ``risk_ensemble`` that
calls them together) speak one schema while only some of them learned from
the extra columns.

The new version is published as N+1 with a model card that says where it
came from; it goes live like any other version (``python -m export.live``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export import model_card
from export.errors import ExportError, SchemaMismatchError
from export.repository import MODEL_FILE, publish_version, version_feature_schema
from features import schemas

ROOT = Path(__file__).resolve().parents[1]
INPUT = "features"
_SLICED = "features_schema_prefix"


def widen(model: onnx.ModelProto, from_width: int, to_width: int) -> onnx.ModelProto:
    """The graph reading ``to_width`` columns, of which it uses the first
    ``from_width``."""
    graph = model.graph
    if [i.name for i in graph.input] != [INPUT]:
        raise ExportError(f"expected one input named {INPUT!r}")
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 2 or dims[1].dim_value != from_width:
        raise SchemaMismatchError(
            f"the model reads {[d.dim_value or d.dim_param for d in dims]}, "
            f"not [batch, {from_width}]"
        )
    adapted = onnx.ModelProto()
    adapted.CopyFrom(model)
    graph = adapted.graph
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == INPUT:
                node.input[k] = _SLICED
    for name, values in (
        ("schema_prefix_starts", [0]),
        ("schema_prefix_ends", [from_width]),
        ("schema_prefix_axes", [1]),
    ):
        graph.initializer.append(
            numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)
        )
    slice_node = helper.make_node(
        "Slice",
        [INPUT, "schema_prefix_starts", "schema_prefix_ends", "schema_prefix_axes"],
        [_SLICED],
        name="schema_prefix",
    )
    graph.node.insert(0, slice_node)
    batch = dims[0].dim_param or "batch"
    graph.ClearField("input")
    graph.input.append(
        helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [batch, to_width])
    )
    onnx.checker.check_model(adapted)
    return adapted


def _max_diff(
    source: onnx.ModelProto, adapted: onnx.ModelProto, rows: np.ndarray, width: int
) -> float:
    import onnxruntime as ort

    def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        return np.asarray(session.run(None, {INPUT: x})[0])

    before = run(source, np.ascontiguousarray(rows[:, :width]))
    after = run(adapted, rows)
    return float(np.max(np.abs(before - after)))


def parity_rows(to_schema: str, limit: int = 256) -> np.ndarray:
    """Real rows in the target schema: the committed sample, its history folded
    over the file."""
    from training.data import read_transactions
    from training.history import encode

    sample = read_transactions(ROOT / "data" / "samples" / "afd_coldstart_sample.csv")
    return encode(sample, to_schema)[:limit]


def adapt(
    repository: Path, model: str, version: int, to_schema: str
) -> tuple[Path, dict[str, Any]]:
    model_dir = repository / model
    source_path = model_dir / str(version) / MODEL_FILE
    if not source_path.is_file():
        raise ExportError(f"{source_path} does not exist")
    from_schema = version_feature_schema(model_dir, version)
    from_names = schemas.feature_names(from_schema)
    to_names = schemas.feature_names(to_schema)
    if from_schema == to_schema:
        raise SchemaMismatchError(f"version {version} already speaks {to_schema}")
    if to_names[: len(from_names)] != from_names:
        raise SchemaMismatchError(
            f"{to_schema} does not start with the columns of {from_schema}: "
            "a slice cannot feed the model"
        )
    source = onnx.load(str(source_path))
    adapted = widen(source, len(from_names), len(to_names))
    rows = parity_rows(to_schema)
    diff = _max_diff(source, adapted, rows, len(from_names))
    if diff != 0.0:
        raise ExportError(f"the adapted graph differs from the source by {diff}")
    card_path = model_dir / str(version) / "model_card.json"
    source_card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    payload = adapted.SerializeToString()
    opset = max((o.version for o in adapted.opset_import if o.domain == ""), default=0)

    def files_for(new_version: int) -> dict[str, bytes]:
        content = dict(source_card)
        content.update(
            {
                "model": model,
                "version": new_version,
                "feature_schema": to_schema,
                "feature_names": list(to_names),
                "adapted_from": {
                    "version": version,
                    "feature_schema": from_schema,
                    "reads_columns": len(from_names),
                    "parity_max_abs_diff": diff,
                    "parity_rows": len(rows),
                },
            }
        )
        interface = dict(content.get("interface") or {})
        interface["input"] = (
            f"{INPUT} float32 [batch, {len(to_names)}] ({to_schema}); the graph "
            f"reads the first {len(from_names)} columns ({from_schema})"
        )
        interface["onnx_opset"] = opset
        content["interface"] = interface
        if "description" in content:
            content["description"] = (
                f"Version {version} ({from_schema}) unchanged, reading {to_schema}: "
                f"a Slice keeps the first {len(from_names)} columns. "
                + content["description"]
            )
        files = {
            MODEL_FILE: payload,
            "model_card.json": (json.dumps(content, indent=2) + "\n").encode(),
        }
        # A source card too old to render has only the JSON card.
        note = (
            f"\n## Adapted\n\nVersion {version} of this model, trained on "
            f"`{from_schema}`, published again to read `{to_schema}`: a Slice "
            f"keeps the first {len(from_names)} columns, the rest of the graph is "
            f"unchanged (largest difference on {len(rows)} real rows: {diff}).\n"
        )
        with contextlib.suppress(KeyError, TypeError):
            files["model_card.md"] = (model_card.render(content) + note).encode()
        return files

    target = publish_version(model_dir, files_for)
    return target, {
        "model": model,
        "from_version": version,
        "from_schema": from_schema,
        "published": str(target),
        "feature_schema": to_schema,
        "parity_max_abs_diff": diff,
        "parity_rows": len(rows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.adapt",
        description="Publish a version again, reading a wider feature schema.",
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--to-schema", required=True, choices=tuple(schemas.SCHEMAS))
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    args = parser.parse_args(argv)
    try:
        _, summary = adapt(args.repository, args.model, args.version, args.to_schema)
    except (ExportError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
