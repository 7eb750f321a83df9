"""Property: any cell of the small wide-site export may hold anything (#15).

Hypothesis replaces a few cells of tests/cases/site_wide_en (any file, any data row, any
column, the patient key included) with random text, digits, huge or negative numbers,
exponents, an empty cell, NUL and other control characters or non-ASCII text, and runs
``validate_only``. Whatever the cells hold, validation either rejects the delivery with one
of the package's errors (``CartEtlError``: the CLI's one-line exit 2) or ends with every
input row accepted or quarantined: never a polars panic, an overflow or a ``SchemaError``.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cart_etl.errors import CartEtlError
from cart_etl.pipeline import Source, validate_only

WIDE = Path(__file__).resolve().parents[2] / "tests" / "cases" / "site_wide_en"
SITE = "example_wide_en"


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


EXPORT = {p.name: _read(p) for p in sorted(WIDE.glob("*.csv"))}
# (file, data row, column index) of every cell, header excluded.
CELLS = [
    (name, r, c)
    for name, rows in EXPORT.items()
    for r in range(1, len(rows))
    for c in range(len(rows[0]))
]

values = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.from_regex(r"\A[0-9]{1,25}\Z"),
    st.from_regex(r"\A-?[0-9]{1,6}(\.[0-9]{1,8})?\Z"),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b",
            "\u3000",
            "１９６４０１０６",
            "19640106",
            "-5",
            "1e308",
            "99999999999999999999",
            "2021-02-30",
            "0000-01-01",
            "-0001-01-01T00:00",
            "9999-12-31T23:59",
            "2021-03-01T25:61",
            "36,8",
            "NaN",
            "male",
            "H1004821",
            "EX-002",
            "Alice Thornbury",
            "\ufeff",
            "\u202e",
            "😀",
            "x" * 500,
        ]
    ),
)
mutations = st.lists(st.tuples(st.sampled_from(CELLS), values), min_size=1, max_size=4)


def _write(folder: Path, edits: list[tuple[tuple[str, int, int], str]]) -> None:
    shutil.copytree(WIDE, folder)
    changed = {name for (name, _, _), _ in edits}
    for name in changed:
        rows = [list(r) for r in EXPORT[name]]
        for (file, r, c), value in edits:
            if file == name:
                rows[r][c] = value
        with (folder / name).open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(rows)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(edits=mutations)
def test_01_mutated_cells_never_crash_and_every_row_is_accounted_for(edits):
    with tempfile.TemporaryDirectory(prefix="cart_etl_mutation_") as tmp:
        folder = Path(tmp) / "export"
        _write(folder, edits)
        try:
            outcome, _report = validate_only(Source(str(folder), SITE), expectations=False)
        except CartEtlError:
            return  # a delivery refused with one line (exit 2): allowed
        for f in outcome.files:
            assert f.rows_in == f.accepted + f.quarantined, f
            assert f.unaccounted == 0, f
        for name in {name for (name, _, _), _ in edits}:
            assert any(f.file == name for f in outcome.files), name
