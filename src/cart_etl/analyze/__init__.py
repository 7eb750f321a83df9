"""Analysis layer: reproduces Zhou et al., Front. Immunol. 2025;16:1530623 from the marts.

Every function takes a DuckDB connection to a store written by ``cart-etl run`` and reads
only ``marts.*`` with SQL.
"""

from cart_etl.analyze.table2 import table2

__all__ = ["table2"]
