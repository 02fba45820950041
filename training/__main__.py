"""``python -m training --data PATH [--out DIR] [--seed N] ...``"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from features.schemas import CURRENT_SCHEMA_ID, SCHEMAS
from training.autoencoder import ERROR_KINDS
from training.labels import DEFAULT_LABEL_DELAY_DAYS
from training.pipeline import TrainConfig


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the autoencoder and the classifier on a transaction CSV.",
    )
    parser.add_argument("--data", type=Path, required=True, help="CSV or CSV.gz")
    parser.add_argument(
        "--out", type=Path, default=Path("runs") / stamp, help="new run directory"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ae-epochs", type=int, default=20)
    parser.add_argument("--clf-epochs", type=int, default=15)
    parser.add_argument(
        "--epochs", type=int, help="set both --ae-epochs and --clf-epochs"
    )
    parser.add_argument("--max-rows", type=int, help="read only the first N rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--unseen-rate",
        type=float,
        default=0.1,
        help="per field, share of training rows whose value is moved to OTHER",
    )
    parser.add_argument(
        "--swap-rate",
        type=float,
        default=0.05,
        help="per field, share of training rows given a random known value",
    )
    parser.add_argument(
        "--ae-error",
        choices=ERROR_KINDS,
        default="blockwise",
        help="autoencoder reconstruction error (mse: version 1's)",
    )
    parser.add_argument(
        "--extra-eval",
        type=Path,
        action="append",
        default=[],
        metavar="CSV",
        help="also report the default policy on this labelled file (repeatable)",
    )
    parser.add_argument(
        "--feature-schema",
        choices=tuple(SCHEMAS),
        default=CURRENT_SCHEMA_ID,
        help="feature schema to train on (txn-history-v1 adds customer history)",
    )
    parser.add_argument(
        "--label-delay-days",
        type=float,
        default=DEFAULT_LABEL_DELAY_DAYS,
        help="a label without reported_at counts this long after its transaction",
    )
    parser.add_argument(
        "--clf-members", type=int, default=3, help="classifier ensemble members"
    )
    parser.add_argument(
        "--balanced",
        action="store_true",
        help="balanced class weights for the classifier (off: measured worse)",
    )
    args = parser.parse_args(argv)
    if args.epochs is not None:
        args.ae_epochs = args.clf_epochs = args.epochs
    return TrainConfig(
        data=args.data,
        out=args.out,
        seed=args.seed,
        ae_epochs=args.ae_epochs,
        clf_epochs=args.clf_epochs,
        max_rows=args.max_rows,
        threads=args.threads,
        unseen_rate=args.unseen_rate,
        swap_rate=args.swap_rate,
        ae_error=args.ae_error,
        extra_eval=tuple(args.extra_eval),
        feature_schema=args.feature_schema,
        label_delay_days=args.label_delay_days,
        clf_members=args.clf_members,
        clf_balanced=args.balanced,
    )


def main(argv: Sequence[str] | None = None) -> int:
    from training.data import MalformedDataError
    from training.pipeline import train
    from training.run import MANIFEST

    cfg = parse_args(argv)
    if cfg.out.exists():
        print(
            f"error: {cfg.out} already exists; a run needs a new directory",
            file=sys.stderr,
        )
        return 1
    try:
        out = train(cfg)
    except (FileNotFoundError, MalformedDataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        # A run that failed before its run.json leaves no directory behind
        # (it would pass for the newest run); only the one created here.
        if cfg.out.is_dir() and not (cfg.out / MANIFEST).is_file():
            shutil.rmtree(cfg.out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
