"""Extract stage: every source yields the canonical raw frames of :mod:`.contract` (no cleaning).

``site/`` reads a site delivery (files or database tables) as its site mapping says,
``readers/`` turns CSV, XLSX and SQL rows into text cells, ``fhir/`` reads FHIR Bundles
and Bulk NDJSON.
"""
