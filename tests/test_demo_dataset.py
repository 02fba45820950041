import gzip
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest

from demo.dataset import DatasetError, iter_file, parse_label, read_transactions

HEADER = (
    "transaction_id,user_id,amount,currency,country,device,timestamp,"
    "product_category,is_fraud\n"
)
SAMPLE = Path(__file__).resolve().parents[1] / "data/samples/afd_coldstart_sample.csv"


def rows(*lines: str) -> list:
    return list(read_transactions(io.StringIO(HEADER + "".join(lines))))


def test_amount_is_sent_as_a_json_number_with_the_files_digits() -> None:
    (txn,) = rows("t1,u1,17.30,USD,US,mobile,2024-01-01T00:00:00Z,W,0\n")

    body = txn.body("number").decode()

    assert '"amount": 17.30' in body
    assert json.loads(body, parse_float=Decimal)["amount"] == Decimal("17.30")


def test_amount_can_be_sent_as_a_string() -> None:
    (txn,) = rows("t1,u1,17.30,USD,US,mobile,2024-01-01T00:00:00Z,W,0\n")

    assert json.loads(txn.body("string"))["amount"] == "17.30"


def test_request_carries_the_schema_fields_and_not_the_label() -> None:
    (txn,) = rows("t1,u1,5.00,EUR,DE,desktop,2024-01-01T00:00:00Z,books,1\n")

    assert json.loads(txn.body()) == {
        "transaction_id": "t1",
        "user_id": "u1",
        "amount": 5.0,
        "currency": "EUR",
        "country": "DE",
        "device": "desktop",
        "timestamp": "2024-01-01T00:00:00Z",
        "product_category": "books",
    }
    assert txn.label is True


def test_empty_product_category_is_left_out() -> None:
    (txn,) = rows("t1,u1,5.00,EUR,DE,desktop,2024-01-01T00:00:00Z,,\n")

    assert "product_category" not in json.loads(txn.body())
    assert txn.label is None


@pytest.mark.parametrize("amount", ["1,000.00", "017.5", "12.", "abc", ""])
def test_amount_that_is_not_a_plain_number_is_rejected_with_its_line(
    amount: str,
) -> None:
    line = f't1,u1,"{amount}",USD,US,mobile,2024-01-01T00:00:00Z,W,0\n'

    with pytest.raises(DatasetError, match="line 2"):
        rows(line)


def test_labels() -> None:
    assert parse_label("1") is True
    assert parse_label("0") is False
    assert parse_label("") is None
    with pytest.raises(DatasetError, match="'yes'"):
        parse_label("yes")


def test_missing_columns_are_named() -> None:
    stream = io.StringIO("transaction_id,amount\nt1,1.00\n")

    with pytest.raises(DatasetError, match="user_id"):
        list(read_transactions(stream))


def test_gzip_file_is_read_and_limit_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "txns.csv.gz"
    lines = [f"t{i},u1,1.00,USD,US,mobile,2024-01-01T00:00:00Z,W,0\n" for i in range(5)]
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(HEADER + "".join(lines))

    assert [t.transaction_id for t in iter_file(path, limit=3)] == ["t0", "t1", "t2"]
    assert len(list(iter_file(path))) == 5


def test_shipped_sample_reads_whole() -> None:
    transactions = list(iter_file(SAMPLE))

    labels = [t.label for t in transactions]
    assert len(transactions) == 1611
    assert labels.count(True) == 95
    assert labels.count(False) == 715
    assert len({t.transaction_id for t in transactions}) == 1611
