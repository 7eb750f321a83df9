"""Cohort selection for whole-hospital FHIR exports (a cheap first pass before flattening).

A Bulk export holds every patient of a hospital. A patient is in the cohort when the export
names them a study subject (a Patient.identifier of the study-id system of
``fhir/targets.yaml`` not typed MR, as for the study id itself) or holds CAR-T
administration evidence for them: a Procedure or MedicationAdministration whose code maps
to the ``cart_infusion`` target of ``fhir/concept_map.csv``. The other patients and every
resource about them (``subject`` or ``patient`` reference) are removed before the views run
and counted as *not in cohort*; resources about no patient (Medication, Device,
Organization...) stay, and so do resources whose reference names no Patient of the input:
recognition rejects them (``fhir.missing_subject``), they are not another patient's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import duckdb

from cart_etl.extract.fhir.concept_map import concept_rows
from cart_etl.mappings import Mappings

_EVIDENCE: Final = (
    "procedure",
    "procedure_coding",
    "medication_administration",
    "medication_administration_coding",
    "medication",
    "medication_coding",
    "patient_identifier",
)

RunView = Callable[[duckdb.DuckDBPyConnection, str, dict[str, Any], str], None]


def cohort_patients(
    con: duckdb.DuckDBPyConnection,
    views: dict[str, dict[str, Any]],
    mappings: Mappings,
    run: RunView,
    *,
    study_id_system: str | None = None,
) -> int | None:
    """Remove the resources of patients outside the cohort; the number removed.

    None when the input holds no evidence at all (a partial delivery: nothing is removed).
    """
    spec = mappings.load("fhir/targets.yaml")
    patient = spec.get("patient") or {}
    study_system = study_id_system or patient.get("study_id_system", "")
    mrn = patient.get("mrn_type") or {}
    codes = [(r.system, r.code) for r in concept_rows(mappings) if r.target == "cart_infusion"]
    con.execute("CREATE OR REPLACE TEMP TABLE _cart_codes (system VARCHAR, code VARCHAR)")
    if codes:
        con.executemany("INSERT INTO _cart_codes VALUES (?, ?)", codes)
    if "patient_identifier" in views:
        run(con, "cohort_patient_identifier", views["patient_identifier"], "resources")
        # Every Patient a study subject (a site's own cohort export): nothing to remove, and
        # the evidence views need not run.
        uncovered = con.execute(
            "SELECT count(*) FROM resources WHERE resource_type = 'Patient' "
            "AND contained_in IS NULL AND _key NOT IN (SELECT key FROM "
            "v_cohort_patient_identifier WHERE system = ? AND nullif(value, '') IS NOT NULL "
            "AND NOT (coalesce(type_system, '') = ? AND type_code = ?) AND key IS NOT NULL)",
            [study_system, mrn.get("system", ""), mrn.get("code", "MR")],
        ).fetchone()
        if uncovered is not None and uncovered[0] == 0:
            con.execute('DROP TABLE IF EXISTS "v_cohort_patient_identifier"')
            return None
    for name in _EVIDENCE:
        if name in views and name != "patient_identifier":
            run(con, f"cohort_{name}", views[name], "resources")
    has_identifiers = "patient_identifier" in views
    con.execute(
        _cohort_sql("v_cohort_", identifiers=has_identifiers),
        _rule(study_system, mrn) if has_identifiers else [],
    )
    for name in _EVIDENCE:
        con.execute(f'DROP TABLE IF EXISTS "v_cohort_{name}"')
    (evidence,) = con.execute("SELECT count(*) FROM _cohort WHERE key IS NOT NULL").fetchone() or (
        0,
    )
    if not evidence:
        return None
    # The patient each resource is about: itself (Patient), else subject / patient.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _about AS
        SELECT file, pos, resource_type, _key, CASE WHEN resource_type = 'Patient' THEN _key ELSE
            coalesce(r.key, regexp_extract(x.ref, '(?:^|/)Patient/([^/]+)', 1)) END AS patient
        FROM (SELECT file, pos, resource_type, _key, contained_in,
                     coalesce(resource->'subject'->>'reference', resource->'patient'->>'reference',
                              resource->'beneficiary'->>'reference') AS ref
              FROM resources) x
        LEFT JOIN refs r ON r.ref = x.ref
        WHERE contained_in IS NULL
        """
    )
    # Only resources about a Patient of the input: a dangling reference is not evidence of
    # another patient and is left to recognition (rejected as fhir.missing_subject).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _outside AS SELECT file, pos FROM _about
        WHERE patient IN (SELECT _key FROM resources WHERE resource_type = 'Patient'
                          AND contained_in IS NULL)
          AND patient NOT IN (SELECT key FROM _cohort WHERE key IS NOT NULL)
        """
    )
    (removed,) = con.execute("SELECT count(*) FROM _outside").fetchone() or (0,)
    con.execute("DELETE FROM resources WHERE (file, pos) IN (SELECT file, pos FROM _outside)")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _res AS SELECT file, pos, resource_type, _key FROM "
        "resources WHERE contained_in IS NULL"
    )
    return int(removed)


# Views whose rows belong to a resource of another view (same key).
_CHILD_OF: Final = {
    "observation_coding": "observation",
    "observation_component": "observation",
    "observation_component_coding": "observation",
    "procedure_coding": "procedure",
    "medication_administration_coding": "medication_administration",
    "condition_coding": "condition",
    "patient_identifier": "patient",
}


def _rule(study_system: str, mrn: dict[str, Any]) -> list[str]:
    return [study_system, str(mrn.get("system", "")), str(mrn.get("code", "MR"))]


def _cohort_sql(prefix: str, *, identifiers: bool) -> str:
    """``_cohort``: the patients with CAR-T administration evidence (a Procedure or a
    MedicationAdministration, its own code or its Medication's, mapped to cart_infusion)
    and, with ``identifiers``, those with a study-id identifier not typed MR (parameters:
    the study-id system, the MR type's system and code)."""
    sql = f"""
        CREATE OR REPLACE TEMP TABLE _cohort AS
        SELECT DISTINCT p.patient_key AS key FROM {prefix}procedure p
            JOIN {prefix}procedure_coding c ON c.key = p.key
            JOIN _cart_codes m ON m.system = c.system AND m.code = c.code
        UNION
        SELECT DISTINCT a.patient_key FROM {prefix}medication_administration a
            LEFT JOIN {prefix}medication_administration_coding c ON c.key = a.key
            LEFT JOIN {prefix}medication_coding mc ON mc.key = CASE
                WHEN starts_with(a.medication_reference, '#') THEN a.key || a.medication_reference
                ELSE a.medication_key END
            JOIN _cart_codes m ON (m.system = c.system AND m.code = c.code)
                OR (m.system = mc.system AND m.code = mc.code)
        """
    ident = f"""
        UNION
        SELECT DISTINCT key FROM {prefix}patient_identifier WHERE system = $1
            AND nullif(value, '') IS NOT NULL
            AND NOT (coalesce(type_system, '') = $2 AND type_code = $3)
        """
    return sql + ident if identifiers else sql


def select_cohort_in_views(con: duckdb.DuckDBPyConnection, mappings: Mappings) -> int:
    """The same cohort rule on view tables already flattened elsewhere (``--flat``): rows of
    patients outside the cohort are deleted; the number of resources removed.

    Nothing is removed when the views hold no evidence at all (as for resources).
    """
    spec = mappings.load("fhir/targets.yaml")
    patient = spec.get("patient") or {}
    study_system = patient.get("study_id_system", "")
    mrn = patient.get("mrn_type") or {}
    codes = [(r.system, r.code) for r in concept_rows(mappings) if r.target == "cart_infusion"]
    con.execute("CREATE OR REPLACE TEMP TABLE _cart_codes (system VARCHAR, code VARCHAR)")
    if codes:
        con.executemany("INSERT INTO _cart_codes VALUES (?, ?)", codes)
    con.execute(_cohort_sql("v_", identifiers=True), _rule(study_system, mrn))
    found = con.execute("SELECT count(*) FROM _cohort WHERE key IS NOT NULL").fetchone()
    if not found or not found[0]:
        return 0
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _outside AS SELECT key FROM v_patient WHERE key NOT IN "
        "(SELECT key FROM _cohort WHERE key IS NOT NULL)"
    )
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    removed = 0
    for parent in ("patient", *sorted({t[2:] for t in tables if t.startswith("v_")} - {"patient"})):
        table = f"v_{parent}"
        if parent in _CHILD_OF or table not in tables:
            continue
        cols = {r[0] for r in con.execute(f'DESCRIBE "{table}"').fetchall()}
        column = "key" if parent == "patient" else "patient_key" if "patient_key" in cols else None
        if column is None:
            continue
        # Only rows about a Patient of the input outside the cohort: a reference to no
        # Patient of the input is rejected later (fhir.missing_subject), as for resources.
        outside = f"{column} IN (SELECT key FROM _outside)"
        gone = con.execute(f'SELECT count(*) FROM "{table}" WHERE {outside}').fetchone()
        removed += gone[0] if gone else 0
        for child, of in _CHILD_OF.items():
            if of == parent and f"v_{child}" in tables:
                con.execute(
                    f'DELETE FROM "v_{child}" WHERE key IN '
                    f'(SELECT key FROM "{table}" WHERE {outside})'
                )
        con.execute(f'DELETE FROM "{table}" WHERE {outside}')
    return removed
