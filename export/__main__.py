"""``python -m export --run runs/<dir> [--repository model_repository] [--publish]``"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from export.errors import ExportError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description=(
            "Export a training run's models to ONNX, check them against the "
            "serving contract and their framework models, and optionally publish "
            "them as new versions in a Triton model repository."
        ),
    )
    parser.add_argument("--run", type=Path, required=True, help="training run dir")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument(
        "--publish", action="store_true", help="write version N+1 of each model"
    )
    parser.add_argument(
        "--model",
        action="append",
        choices=("anomaly_autoencoder", "risk_classifier"),
        help="only this model (repeatable; default both)",
    )
    parser.add_argument(
        "--allow-republish",
        action="store_true",
        help="publish a run already published as a version (default: refused)",
    )
    args = parser.parse_args(argv)

    from export.release import EXPORTERS, release

    models = tuple(args.model) if args.model else tuple(EXPORTERS)
    try:
        summary = release(
            args.run,
            args.repository,
            publish_models=args.publish,
            models=models,
            allow_republish=args.allow_republish,
        )
    except ExportError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
