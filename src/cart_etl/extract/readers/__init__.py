"""Source readers: rows of CSV/XLSX files and SQL tables as text cells, before any mapping."""
