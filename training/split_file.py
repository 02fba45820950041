"""Split a transaction file in two by time.

``python -m training.split_file --data F --before 2018-03-20T00:00:00Z
--earlier e.csv.gz --later l.csv.gz`` (or ``--fraction 0.85``: the earliest
85 % of rows, in the same order as the training split). Rows keep every
column; the split point is reported on stdout.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TextIO

from training.data import MalformedDataError, _open_text


def _open_out(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "wb"), encoding="utf-8", newline="")
    return open(path, "w", encoding="utf-8", newline="")


def split_file(
    data: Path,
    earlier: Path,
    later: Path,
    *,
    before: datetime | None = None,
    fraction: float | None = None,
) -> dict[str, object]:
    """Write rows before the cut to ``earlier`` and the rest to ``later``.

    Rows are ordered by timestamp (ties keep file order), as ``read_transactions``
    and the training split order them.
    """
    if (before is None) == (fraction is None):
        raise ValueError("give exactly one of --before and --fraction")
    if fraction is not None and not 0 < fraction < 1:
        raise ValueError(f"--fraction must be within (0, 1), got {fraction}")
    if before is not None and before.tzinfo is None:
        raise ValueError("--before must carry a UTC offset (RFC 3339)")

    with _open_text(data) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or "timestamp" not in header:
            raise MalformedDataError(data, 1, None, "expected a header with timestamp")
        at = header.index("timestamp")
        rows = [row for row in reader if row]
    stamps = [datetime.fromisoformat(row[at]).timestamp() for row in rows]
    order = sorted(range(len(rows)), key=stamps.__getitem__)
    if fraction is not None:
        cut = int(len(order) * fraction)
    else:
        assert before is not None
        limit = before.timestamp()
        cut = sum(1 for s in stamps if s < limit)
    if cut in (0, len(order)):
        raise ValueError(f"the cut leaves one side empty ({cut} of {len(order)} rows)")

    for path, part in ((earlier, order[:cut]), (later, order[cut:])):
        with _open_out(path) as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows[i] for i in part)
    return {
        "rows": len(order),
        "earlier_rows": cut,
        "later_rows": len(order) - cut,
        "earlier_end": rows[order[cut - 1]][at],
        "later_start": rows[order[cut]][at],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.split_file",
        description="Split a transaction CSV in two by time.",
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--earlier", type=Path, required=True)
    parser.add_argument("--later", type=Path, required=True)
    cut = parser.add_mutually_exclusive_group(required=True)
    cut.add_argument(
        "--before",
        type=datetime.fromisoformat,
        help="RFC 3339 time: rows strictly before it go to --earlier",
    )
    cut.add_argument(
        "--fraction", type=float, help="share of rows, earliest first, for --earlier"
    )
    args = parser.parse_args(argv)
    try:
        summary = split_file(
            args.data,
            args.earlier,
            args.later,
            before=args.before,
            fraction=args.fraction,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, value in summary.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
