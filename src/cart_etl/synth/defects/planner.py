"""Seeded choice of the rows and kinds of the site-export defects.

``DefectPlanner`` owns the one random stream of the tabular defects: which rows of a
patient's file receive a defect, which kind and column among the candidates, which
variant (padding, alternate date format, typo), and the 24-hour spacing of quarantined
rows of one item.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

import numpy as np

from cart_etl.synth.defects.catalogue import DEFECT_CATALOGUE, QUARANTINE_KINDS, QUARANTINE_SPACING

Candidate = tuple[str, int]  # (kind id, column index; -1 for whole-row kinds)


class DefectPlanner:
    """Seeded decisions of which rows get which defect, with the quarantine spacing rule.

    All randomness comes from one dedicated ``numpy`` Generator seeded ``[seed, 777]`` and
    is consumed only here, so the clean export never depends on it. While some kind has not
    been injected yet and fewer than ``force_patients`` patients were seen, rows are also
    offered (at ``force_rate``) to the missing kinds only: small cohorts then still contain
    every kind, large ones keep the nominal rates.
    """

    def __init__(self, seed: int, *, force_patients: int = 50, force_rate: float = 0.5) -> None:
        """Create the planner.

        Args:
            seed: Cohort seed; the generator is seeded with ``[seed, 777]``.
            force_patients: Patients during which missing kinds are actively sought.
            force_rate: Per-row probability of offering a row to the missing kinds.
        """
        self._rng = np.random.default_rng([seed, 777])
        self._force_patients = force_patients
        self._force_rate = force_rate
        self._unseen = set(DEFECT_CATALOGUE)
        self._patient = -1
        self._quarantined: dict[tuple[str, str], list[datetime]] = {}

    @property
    def kinds_seen(self) -> frozenset[str]:
        """Kinds injected at least once so far."""
        return frozenset(DEFECT_CATALOGUE) - self._unseen

    def start_patient(self) -> None:
        """Begin the next patient: the quarantine spacing rule is per patient."""
        self._patient += 1
        self._quarantined.clear()

    def pick_rows(self, n_rows: int, rate: float, kinds: Collection[str]) -> list[tuple[int, bool]]:
        """Rows that should receive a defect, in order.

        Args:
            n_rows: Number of data rows of this patient in one file.
            rate: Nominal per-row defect probability of the file.
            kinds: Kinds this file can ever carry (decides whether forcing applies).

        Returns:
            ``(row index, forced_only)`` pairs; ``forced_only`` rows may only take a kind
            not injected yet.
        """
        if n_rows == 0:
            return []
        draws = self._rng.random(n_rows)
        forcing = self._patient < self._force_patients and not self._unseen.isdisjoint(kinds)
        threshold = max(rate, self._force_rate) if forcing else rate
        return [(int(i), bool(draws[i] >= rate)) for i in np.flatnonzero(draws < threshold)]

    def choose(self, candidates: Sequence[Candidate], *, forced_only: bool) -> Candidate | None:
        """Weighted choice of a kind, then a uniform choice among its columns."""
        if forced_only:
            candidates = [c for c in candidates if c[0] in self._unseen]
        if not candidates:
            return None
        kinds = list(dict.fromkeys(kind for kind, _ in candidates))
        # Plain Python: numpy's per-call overhead dwarfs these five-element sums.
        point = self._rng.random() * sum(DEFECT_CATALOGUE[k].weight for k in kinds)
        kind = kinds[-1]
        for k in kinds:
            point -= DEFECT_CATALOGUE[k].weight
            if point < 0:
                kind = k
                break
        columns = [c for c in candidates if c[0] == kind]
        return columns[self.variant(len(columns))]

    def variant(self, n: int) -> int:
        """Uniform integer in ``[0, n)`` (which padding, which alternate format, ...)."""
        if n <= 1:
            return 0
        return min(int(self._rng.random() * n), n - 1)

    def quarantine_allowed(self, item: tuple[str, str], when: datetime | None) -> bool:
        """True when no quarantine defect of this patient's ``item`` lies within 24 h."""
        if when is None:
            return False
        return all(abs(when - t) > QUARANTINE_SPACING for t in self._quarantined.get(item, ()))

    def mark(self, kind: str, item: tuple[str, str], when: datetime | None) -> None:
        """Record an injected defect (coverage, and spacing of quarantine kinds)."""
        self._unseen.discard(kind)
        if kind in QUARANTINE_KINDS and when is not None:
            self._quarantined.setdefault(item, []).append(when)
