"""SQL on FHIR v2 ViewDefinition runner compiled to DuckDB SQL.

https://sql-on-fhir.org/ig/ (pinned: FHIR/sql-on-fhir-v2 49fc1adffa8490e7cd5c1e8917d8eb24cbea9dee).
:func:`compile_view` turns a ViewDefinition into one DuckDB ``SELECT``; :func:`run_view`
executes it into a :class:`pyarrow.Table`; :func:`materialize_view` executes it into a
DuckDB table (streamed, for inputs too large for memory); :func:`view_columns` lists the
output columns; :func:`materialize_views` runs many views with each resource type's JSON
parsed once.
"""

from cart_etl.extract.fhir.sof.compile import compile_view
from cart_etl.extract.fhir.sof.errors import ViewDefinitionError
from cart_etl.extract.fhir.sof.run import materialize_view, materialize_views, run_view
from cart_etl.extract.fhir.sof.view import view_columns

__all__ = [
    "ViewDefinitionError",
    "compile_view",
    "materialize_view",
    "materialize_views",
    "run_view",
    "view_columns",
]
