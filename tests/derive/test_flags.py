"""Exclusion flags in CONSORT order (``cart_etl.derive.flags``).

Expected values are worked out by hand from the README "Exclusions (CONSORT order)" and the
paper's Figure 1 (61 screened -> 60 infused -> 4 followed < 28 days, 11 data lost -> 45):
``not_infused``, then ``followup_lt_28d`` (death or last contact before day 28,
``derive/derivation.yaml`` ``exclusions.min_follow_up_days``), then ``data_lost`` with
``lost_data_kind`` monitoring (no temperature on days 0-14), response (no marrow on days
21-35) or follow_up (no follow-up record).
"""

from __future__ import annotations

import polars as pl

from cart_etl.derive.flags import derive_exclusions
from cart_etl.derive.rules import derivation_rules

SCHEMA = {
    "patient_key": pl.String,
    "is_infused": pl.Boolean,
    "os_days": pl.Int32,
    "monitored": pl.Boolean,
    "response_assessed": pl.Boolean,
}
MIN_DAYS = derivation_rules().min_follow_up_days


def exclusions(rows: list[tuple]) -> list[tuple]:
    df = pl.DataFrame(rows, schema=SCHEMA, orient="row")
    out = derive_exclusions(df, MIN_DAYS).sort("patient_key")
    return out.select("patient_key", "exclusion_reason", "lost_data_kind", "is_included").rows()


def test_01_min_follow_up_is_28_days():
    """Paper Figure 1: patients followed < 28 days are excluded."""
    assert MIN_DAYS == 28


def test_02_consort_order_and_lost_data_kind():
    # fmt: off
    rows = [
        # key  infused os    monitored response
        ("a",  False,  None, None,     None),   # no infusion record
        ("b",  False,  10,   False,    False),  # not infused wins over everything else
        ("c",  True,   27,   False,    False),  # died day 27: follow-up < 28 before data lost
        ("d",  True,   28,   True,     True),   # day 28 is not "before day 28": analysed
        ("e",  True,   100,  False,    False),  # no temperature on days 0-14: monitoring
        ("f",  True,   100,  True,     None),   # no marrow on days 21-35 (null = none)
        ("g",  True,   None, True,     True),   # no follow-up record at all
        ("h",  True,   400,  True,     True),
    ]
    # fmt: on
    assert exclusions(rows) == [
        ("a", "not_infused", None, False),
        ("b", "not_infused", None, False),
        ("c", "followup_lt_28d", None, False),
        ("d", None, None, True),
        ("e", "data_lost", "monitoring", False),
        ("f", "data_lost", "response", False),
        ("g", "data_lost", "follow_up", False),
        ("h", None, None, True),
    ]


def test_03_monitoring_is_reported_before_response_and_follow_up():
    """Several gaps at once: the first in the docstring's order names the kind."""
    # fmt: off
    rows = [
        ("a",  True,  None, False, False),
        ("b",  True,  None, True,  False),
    ]
    # fmt: on
    assert exclusions(rows) == [
        ("a", "data_lost", "monitoring", False),
        ("b", "data_lost", "response", False),
    ]


def test_04_missing_monitoring_flags_are_treated_as_not_monitored():
    """A patient without a temperature row has monitored = null after the left join."""
    rows = [("a", True, 60, None, True)]
    assert exclusions(rows) == [("a", "data_lost", "monitoring", False)]
