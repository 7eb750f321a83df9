"""FHIR sources: Bundles and Bulk NDJSON (see :mod:`cart_etl.extract.fhir.extract`)."""
