"""Every named rule is documented in the README rule table, with its fix."""

from __future__ import annotations

import re
from pathlib import Path

from cart_etl.validate.rules import RULES

README = Path(__file__).resolve().parents[2] / "README.md"
SRC = Path(__file__).resolve().parents[2] / "src" / "cart_etl" / "validate"


def test_01_readme_lists_every_rule_with_its_fix():
    text = README.read_text(encoding="utf-8")
    missing = [
        r.rule_id for r in RULES.values() if f"| `{r.rule_id}` |" not in text or r.fix not in text
    ]
    assert missing == []


def test_02_rule_ids_used_in_checks_are_defined():
    used = set()
    for path in SRC.glob("*.py"):
        used |= set(re.findall(r'name="([a-z_]+\.[a-z_.]+)"', path.read_text(encoding="utf-8")))
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r'(?:case_for|_cases_each)\(\s*\w+,\s*"([a-z_.]+)"', text))
        used |= set(re.findall(r'rule_id, detail = "([a-z_.]+)"', text))
    assert used
    assert sorted(used - set(RULES)) == []
