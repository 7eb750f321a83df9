"""Load stage: the DuckDB analytic store (OMOP CDM v5.4, marts, run log)."""
