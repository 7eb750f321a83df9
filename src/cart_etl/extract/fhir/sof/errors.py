"""The one exception of the SQL on FHIR runner."""

from __future__ import annotations


class ViewDefinitionError(ValueError):
    """Invalid ViewDefinition, unsupported FHIRPath, or a run-time violation of the spec
    (a non-collection column yielding several values, a non-Boolean ``where``).

    The message names the view, the select/column and the FHIRPath expression.
    """
