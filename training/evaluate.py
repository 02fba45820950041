"""Score labelled files with a finished run's models.

``python -m training.evaluate --run runs/<dir> --data FILE [--data FILE ...]``
prints, per file, the default policy's shares for fraud, legitimate and
unlabelled rows, the share of each field's values that fall into OTHER, and
ranking metrics where the file has both classes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from training import run as layout
from training.robustness import Scores, evaluate_file


def run_scores(run: Path) -> Scores:
    from training import autoencoder as ae
    from training import classifier as clf

    directory = layout.RunDir(Path(run))
    directory.manifest()
    scorer = ae.load_scorer(directory / layout.AUTOENCODER)
    model = clf.load_classifier(directory / layout.CLASSIFIER_KERAS)
    return lambda x: (ae.score(scorer, x), clf.predict(model, x))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Default-policy shares of a run's models on labelled CSVs.",
    )
    parser.add_argument("--run", type=Path, required=True, help="training run dir")
    parser.add_argument(
        "--data", type=Path, action="append", required=True, help="CSV (repeatable)"
    )
    args = parser.parse_args(argv)
    try:
        scores = run_scores(args.run)
        schema = layout.RunDir(args.run).manifest().get("feature_schema")
        results = [evaluate_file(path, scores, schema) for path in args.data]
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
