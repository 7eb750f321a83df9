"""FHIR sources: Bundles and Bulk NDJSON loaded into DuckDB (:mod:`.resources`), cohort
selection (:mod:`.cohort`), the SQL-on-FHIR v2 views (:mod:`.views`, runner :mod:`.sof`)
and the concept map (:mod:`.concept_map`)."""
