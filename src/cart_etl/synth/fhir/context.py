"""One patient's resource-building context: ids, references and the sink resources go to.

Resource ids are uuid5 of ``UUID_NAMESPACE`` and ``"<study_id>/<discriminator>"``, so the
output is a pure function of the records. Every resource is handed to an ``Emit`` sink as
(resource type, id, body without references, references, defect-eligibility flags); the
sink renders the references once per output flavour (``urn:uuid:`` vs ``Type/id``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Final

from cart_etl.synth.fhir.codes import UUID_NAMESPACE
from cart_etl.synth.fhir.elements import Json
from cart_etl.synth.model import ClinicalRecord, VitalSign

# (element, target resource type, target id, element is a list)
Ref = tuple[str, str, str, bool]


# Receives one resource: (resource type, id, body without references, references,
# defect-eligibility flags). References are rendered separately for each output.
Emit = Callable[[str, str, Json, tuple[Ref, ...], int], None]


# Hex digit at uuid position 16 -> same digit with the RFC 4122 variant bits (10xx) set.
_VARIANT_HEX: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def id_maker(study_id: str) -> Callable[[str], str]:
    """Return ``disc -> str(uuid.uuid5(UUID_NAMESPACE, f"{study_id}/{disc}"))``, only faster.

    uuid.uuid5 costs ~5 us; millions of resources make that visible, so the sha1 state of
    the per-patient prefix is reused and the version/variant nibbles are patched as text.
    """
    prefix = hashlib.sha1(UUID_NAMESPACE.bytes + f"{study_id}/".encode())
    variant = _VARIANT_HEX

    def make(discriminator: str) -> str:
        h = prefix.copy()
        h.update(discriminator.encode())
        x = h.hexdigest()
        return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{variant[x[16]]}{x[17:20]}-{x[20:32]}"

    return make


def _no_sink(rtype: str, rid: str, body: Json, refs: tuple[Ref, ...], flags: int) -> None:
    """Placeholder sink of a context whose resources are not being built yet."""
    raise RuntimeError("PatientContext.emit was not given a sink")


def bp_pairs(vitals: list[VitalSign]) -> dict[int, int]:
    """Map sbp index -> dbp index for readings charted at the same instant."""
    dbp_at: dict[datetime, list[int]] = {}
    for i, v in enumerate(vitals):
        if v.item == "dbp":
            dbp_at.setdefault(v.at, []).append(i)
    pairs: dict[int, int] = {}
    if not dbp_at:
        return pairs
    for i, v in enumerate(vitals):
        if v.item == "sbp" and (free := dbp_at.get(v.at)):
            pairs[i] = free.pop(0)
    return pairs


class PatientContext:
    """What every resource builder of one patient needs: the record, ids and references."""

    def __init__(self, rec: ClinicalRecord, study_id_system: str) -> None:
        """Derive the patient's ids and the subject/encounter references."""
        self.rec = rec
        self.pairs = bp_pairs(rec.vitals)
        self.emit: Emit = _no_sink
        self.sid = rec.demographics.study_id
        self.ids = id_maker(self.sid)
        self.system = study_id_system
        self.pid = self.ids("Patient")
        self.eid = self.ids("Encounter") if rec.infusion is not None else None
        subject: Ref = ("subject", "Patient", self.pid, False)
        self.refs: tuple[Ref, ...] = (subject,)
        self.med_refs: tuple[Ref, ...] = (subject,)
        if self.eid is not None:
            self.refs = (subject, ("encounter", "Encounter", self.eid, False))
            self.med_refs = (subject, ("context", "Encounter", self.eid, False))

    def add(self, rtype: str, body: Json, refs: tuple[Ref, ...], flags: int = 0) -> None:
        """Hand one resource to the sink."""
        self.emit(rtype, body["id"], body, refs, flags)

    def observe(self, body: Json, *extra: Ref) -> None:
        """Hand one Observation (subject, encounter and ``extra`` references) to the sink."""
        self.add("Observation", body, self.refs + extra)
