"""Defect injection: the catalogue of kinds, the seeded planner, and the two injectors.

``catalogue`` defines every defect kind and ``DefectRecord`` (one row of
``truth/defects.csv``), ``transforms`` the pure cell rewrites, ``planner`` the seeded
choices of rows, kinds and variants; ``site`` applies them to the tabular site export and
``fhir`` injects the FHIR defects into bundles and NDJSON. The catalogue is re-exported
here, where the docs and the site mapping point (``cart_etl.synth.defects.DEFECT_CATALOGUE``).
"""

from cart_etl.synth.defects.catalogue import (
    DEFECT_CATALOGUE,
    QUARANTINE_KINDS,
    DefectKind,
    DefectRecord,
)

__all__ = ["DEFECT_CATALOGUE", "QUARANTINE_KINDS", "DefectKind", "DefectRecord"]
