"""The synthetic cohort as FHIR R4B: per-patient transaction Bundles and Bulk-Data NDJSON.

``writer.FhirWriter`` writes both; one module per resource family builds the resources
(``baseline``: Patient, Encounter, diagnosis, register and infusion; ``observations``:
vital signs, oxygen, labs; ``medications``; ``outcomes``), ``codes`` and ``elements`` hold
the code tables and JSON builders, ``context`` the per-patient ids and references, and
``sink`` serializes resources into both outputs.
"""
