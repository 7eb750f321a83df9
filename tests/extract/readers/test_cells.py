"""Native XLSX/SQL cell values rendered as the text the CSV reader shows."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import pytest

from cart_etl.extract.readers.cells import cell_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2020, 5, 18, 3, 50), "2020-05-18T03:50:00"),
        (datetime(2020, 5, 18, 3, 50, 1, 250_000), "2020-05-18T03:50:01.250"),
        (date(2020, 5, 18), "2020-05-18"),
        (time(8, 30), "08:30:00"),
        (43969.159722, "43969.159722"),
        (45.0, "45"),
        (1e-07, "0.0000001"),
        (7, "7"),
        (True, "TRUE"),
        (Decimal("38.60"), "38.60"),
        ("", None),
        (" x ", " x "),
        (None, None),
    ],
)
def test_01_native_cells_are_rendered_as_text(value: object, text: str | None) -> None:
    assert cell_text(value) == text
