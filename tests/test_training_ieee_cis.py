"""The IEEE-CIS converter on tiny fabricated competition files."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest

from training.data import COLUMNS, read_transactions
from training.ieee_cis import ConversionError, main, user_id

TRANSACTION_HEADER = (
    "TransactionID,isFraud,TransactionDT,TransactionAmt,ProductCD,card1,card2,"
    "card3,card4,card5,card6,addr1,addr2,dist1,V1"
)
TRANSACTIONS = [
    "100,0,86400,68.5,W,13926,,150.0,discover,142.0,credit,315.0,87.0,19.0,1.0",
    "101,0,86401,29.0,W,13926,,150.0,discover,142.0,credit,315.0,60.0,,1.0",
    "102,1,86460,0.425,C,2755,404.0,150.0,mastercard,102.0,credit,,60.0,,",
    "103,0,90000,12.3449,H,4663,490.0,150.0,visa,166.0,debit,330.0,96.0,,",
    "104,0,90061,50.0,R,18132,567.0,150.0,mastercard,117.0,debit,476.0,,,",
    "105,1,3600000,100.0,S,4497,514.0,150.0,mastercard,102.0,credit,420.0,60.0,,",
]
IDENTITY = [
    "TransactionID,id_01,DeviceType,DeviceInfo",
    "102,0.0,desktop,Windows",
    "103,-5.0,mobile,SM-G930V Build/NRD90M",
    "104,-5.0,desktop,rv:11.0",
    "105,0.0,mobile,",
]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    transactions = tmp_path / "train_transaction.csv"
    transactions.write_text("\n".join([TRANSACTION_HEADER, *TRANSACTIONS]) + "\n")
    identity = tmp_path / "train_identity.csv"
    identity.write_text("\n".join(IDENTITY) + "\n")
    return transactions, identity


def convert(files: tuple[Path, Path], out: Path) -> list[dict[str, str]]:
    transactions, identity = files
    args = ["--transactions", str(transactions), "--identity", str(identity)]
    assert main([*args, "--out", str(out)]) == 0
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(out, "rt", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_every_field_follows_the_documented_mapping(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    rows = convert(files, tmp_path / "ieee.csv")
    assert [r["transaction_id"] for r in rows] == [f"ieee-{i}" for i in range(100, 106)]
    assert [r["amount"] for r in rows] == [
        "68.50",
        "29.00",
        "0.43",
        "12.34",
        "50.00",
        "100.00",
    ]
    assert {r["currency"] for r in rows} == {"USD"}
    # 87 is US; 60 (three rows) is more frequent than 96 (one); missing is ZZ.
    assert [r["country"] for r in rows] == ["US", "XA", "XA", "XB", "ZZ", "XA"]
    assert [r["device"] for r in rows] == [
        "unknown",
        "unknown",
        "desktop",
        "mobile",
        "desktop",
        "unknown",
    ]
    assert rows[0]["timestamp"] == "2017-12-02T00:00:00Z"
    assert rows[5]["timestamp"] == "2018-01-11T16:00:00Z"
    assert [r["product_category"] for r in rows] == ["W", "W", "C", "H", "R", "S"]
    assert [r["is_fraud"] for r in rows] == ["0", "0", "1", "0", "0", "1"]


def test_user_id_is_a_hash_of_the_card_and_address_key(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    rows = convert(files, tmp_path / "ieee.csv")
    assert rows[0]["user_id"] == rows[1]["user_id"]
    assert len({r["user_id"] for r in rows}) == 5
    assert rows[0]["user_id"] == user_id(["13926", "", "150", "142", "315"])
    assert rows[0]["user_id"].startswith("u-") and len(rows[0]["user_id"]) == 14
    assert "13926" not in rows[0]["user_id"]
    assert user_id(["1", "2", "3", "4", "5"], salt="s") != user_id(
        ["1", "2", "3", "4", "5"]
    )


def test_gzip_output_reads_as_training_data(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    convert(files, tmp_path / "ieee.csv.gz")
    txns = read_transactions(tmp_path / "ieee.csv.gz")
    assert len(txns) == 6 and txns.is_fraud.tolist() == [0, 0, 1, 0, 0, 1]


def test_more_hidden_countries_than_codes_fall_back_to_unknown(
    tmp_path: Path,
) -> None:
    lines = [TRANSACTION_HEADER]
    for code in range(1, 43):
        for _ in range(43 - code):  # code 1 most frequent, code 42 rarest
            tid = 1000 + len(lines)
            lines.append(f"{tid},0,86400,1.0,W,1,2,3,visa,5,debit,6,{code}.0,,")
    transactions = tmp_path / "t.csv"
    transactions.write_text("\n".join(lines) + "\n")
    identity = tmp_path / "i.csv"
    identity.write_text("TransactionID,DeviceInfo\n")
    rows = convert((transactions, identity), tmp_path / "out.csv")
    by_code = {
        line.split(",")[12]: r["country"]
        for line, r in zip(lines[1:], rows, strict=True)
    }
    assert by_code["1.0"] == "XA" and by_code["26.0"] == "XZ"
    assert by_code["27.0"] == "QM" and by_code["40.0"] == "QZ"
    assert by_code["41.0"] == by_code["42.0"] == "ZZ"


def test_missing_column_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transactions = tmp_path / "t.csv"
    transactions.write_text("TransactionID,isFraud,TransactionDT\n1,0,86400\n")
    identity = tmp_path / "i.csv"
    identity.write_text("TransactionID,DeviceInfo\n")
    args = ["--transactions", str(transactions), "--identity", str(identity)]
    assert main([*args, "--out", str(tmp_path / "o.csv")]) == 1
    assert "header lacks columns" in capsys.readouterr().err


def test_bad_amount_names_file_and_line(tmp_path: Path) -> None:
    from training.ieee_cis import convert as convert_files

    transactions = tmp_path / "t.csv"
    transactions.write_text(
        TRANSACTION_HEADER + "\n1,0,86400,abc,W,1,2,3,visa,5,debit,6,87.0,,\n"
    )
    identity = tmp_path / "i.csv"
    identity.write_text("TransactionID,DeviceInfo\n")
    with pytest.raises(ConversionError, match=r"t\.csv:2: TransactionAmt 'abc'"):
        convert_files(transactions, identity, tmp_path / "o.csv")
