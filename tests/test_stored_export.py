"""training.stored: stored transactions and their standing outcomes as a file."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import numpy as np
import pytest
from conftest import TEST_DATABASE_URL, GatewayFactory, transaction

from training.data import UNLABELLED, read_transactions
from training.labels import labels_as_of
from training.stored import export


@pytest.mark.integration
async def test_stored_outcomes_become_timed_labels(
    gateway: GatewayFactory, db: asyncpg.Pool, tmp_path: Path
) -> None:
    async with gateway() as client:
        for i, stamp in enumerate(
            [
                "2026-01-28T14:30:00Z",
                "2026-01-29T10:00:00+01:00",
                "2026-01-30T08:00:00Z",
            ]
        ):
            body = transaction(transaction_id=f"s-{i}", timestamp=stamp, amount="12.50")
            assert (await client.post("/transactions", json=body)).status_code == 200
        reports = [
            ("s-0", "fraud", "2026-02-05T00:00:00Z"),
            ("s-1", "fraud", "2026-02-01T00:00:00Z"),
            # An analyst overturns the chargeback later: legitimate stands.
            ("s-1", "legitimate", "2026-02-09T00:00:00Z"),
        ]
        for tid, verdict, reported in reports:
            response = await client.post(
                "/outcomes",
                json={
                    "transaction_id": tid,
                    "outcome": verdict,
                    "source": "analyst",
                    "reported_at": reported,
                },
            )
            assert response.status_code == 201, response.text

    out = tmp_path / "stored.csv.gz"
    counts = await export(TEST_DATABASE_URL, out)
    assert counts == {"rows": 3, "fraud": 1, "legitimate": 1, "unlabelled": 1}
    txns = read_transactions(out)
    assert txns.transaction_id == ["s-0", "s-1", "s-2"]
    assert txns.is_fraud.tolist() == [1, 0, UNLABELLED]
    assert np.all(txns.amount == 12.5)
    assert txns.reported_epoch is not None
    # Known from its report time on, not before.
    feb_6, feb_10 = 1770336000.0, 1770681600.0
    assert labels_as_of(txns, feb_6).tolist() == [1, UNLABELLED, UNLABELLED]
    assert labels_as_of(txns, feb_10).tolist() == [1, 0, UNLABELLED]
