"""FHIR R4 input -> one DuckDB table of resources, the input of the SQL-on-FHIR views.

No cleaning here: every Bulk NDJSON line and every Bundle entry becomes one row of
``resources`` exactly as written (the JSON text is kept), or one rejection naming the file
and the line/entry when it is not a resource at all (unparseable JSON, not UTF-8, no
resourceType, a Bundle of a type whose entries are not facts).

Tables written into the connection (SQL-on-FHIR v2 runner contract,
``cart_etl.extract.fhir.sof``):

``resources(file, pos, resource_type, id, _key, contained_in, resource JSON)``
    ``pos`` is ``line N`` (NDJSON), ``entry N`` (Bundle; ``line N entry M`` for a Bundle
    written on one NDJSON line) or ``resource`` (a file holding one resource). ``_key`` is
    the resource key of ``getResourceKey()``: the id, else the entry's fullUrl.
    Contained resources (``Resource.contained``) are unwrapped as rows of their own with
    ``contained_in`` = the container's key and ``_key`` = ``<container key>#<id>``: they are
    part of their container and never counted as resources of the input.
``refs(ref, key, type)``
    Bundle ``fullUrl`` -> key, so that ``urn:uuid:`` references resolve
    (FHIR R4 Bundle, section 2.36.4 "Resolving references in Bundles").

NDJSON is read in 16 MiB chunks (memory flat in file size, ``.gz`` too); Bundles are read
by DuckDB ``read_text`` and unwrapped in SQL.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import duckdb
import pyarrow as pa

from cart_etl.contract import Rejected
from cart_etl.errors import SourceError

log = logging.getLogger(__name__)

SOURCE: Final = "fhir"
RULE_UNPARSEABLE: Final = "fhir.unparseable"
RULE_INVALID: Final = "fhir.invalid_resource"
RULE_UNSUPPORTED_BUNDLE: Final = "fhir.unsupported_bundle"

_CHUNK: Final = 1 << 24
_FLUSH_BYTES: Final = 1 << 25  # JSON text held in _lines before it is unwrapped (32 MiB)
_NDJSON: Final = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
_JSON: Final = (".json", ".json.gz")

_DDL: Final = """
CREATE OR REPLACE TABLE resources (
    file VARCHAR, pos VARCHAR, resource_type VARCHAR, id VARCHAR, _key VARCHAR,
    contained_in VARCHAR, resource JSON);
CREATE OR REPLACE TABLE refs (ref VARCHAR, key VARCHAR, type VARCHAR);
CREATE OR REPLACE TEMP TABLE _lines (file VARCHAR, line BIGINT, text VARCHAR);
"""

# One parsed document (an NDJSON line or a JSON file) -> its resource rows. A Bundle is
# unwrapped (entries with a resource; `request`-only entries are counted separately).
# Each document and entry is parsed as few times as possible: one multi-path json_extract
# per Bundle entry and per resource (a 1.5 MB Bundle re-parsed per field was the cost).
_UNWRAP: Final = """
WITH bundles AS (
    SELECT file, pos, json_extract(doc, '$.entry[*]') AS arr FROM _docs_ok
    WHERE kind = 'Bundle' AND btype IN ({bundle_types})
), entries AS (
    SELECT file, trim(pos || ' entry ' || unnest(range(len(arr)))) AS pos,
           unnest(arr) AS entry
    FROM bundles
), parts AS (
    SELECT file, pos, json_extract(entry, ['$.resource', '$.fullUrl']) AS p FROM entries
), flat AS (
    SELECT file, pos, doc AS resource, NULL::VARCHAR AS full_url FROM _docs_ok
        WHERE kind IS DISTINCT FROM 'Bundle' AND is_object
    UNION ALL
    SELECT file, pos, p[1], p[2] ->> '$' FROM parts WHERE json_type(p[1]) = 'OBJECT'
), fields AS (
    SELECT *, json_extract_string(resource, ['$.resourceType', '$.id']) AS f FROM flat
)
SELECT file, pos, f[1] AS resource_type, f[2] AS id,
       coalesce(nullif(f[2], ''), full_url) AS _key, NULL::VARCHAR AS contained_in,
       resource, full_url
FROM fields
"""


@dataclass
class LoadedResources:
    """What was read: the connection holding the tables, the files and the rejections."""

    con: duckdb.DuckDBPyConnection
    files: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    entries_without_resource: int = 0
    kinds: set[str] = field(default_factory=set)


def input_files(path: Path) -> list[tuple[Path, str, str]]:
    """(path, relative name, kind "ndjson"|"bundle") of every FHIR file under ``path``.

    Raises:
        SourceError: the path does not exist or holds no FHIR file.
    """
    if not path.exists():
        raise SourceError(
            f"FHIR input {path} does not exist.",
            fix="pass a Bundle .json file, an NDJSON file or a folder of them.",
        )
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    found: list[tuple[Path, str, str]] = []
    for p in files:
        rel = p.name if p == path else str(p.relative_to(path))
        name = p.name.lower()
        if name.endswith(_NDJSON):
            found.append((p, rel, "ndjson"))
        elif name.endswith(_JSON) and not name.startswith("."):
            found.append((p, rel, "bundle"))
    if not found:
        raise SourceError(
            f"No FHIR files (*.json Bundles, *.ndjson[.gz]) under {path}.",
            fix="pass the folder of a FHIR Bulk export or of Bundle files.",
        )
    return found


def load_resources(
    path: Path, con: duckdb.DuckDBPyConnection, *, bundle_types: Sequence[str]
) -> LoadedResources:
    """Read every FHIR file under ``path`` into ``resources`` and ``refs`` of ``con``."""
    con.execute(_DDL)
    loaded = LoadedResources(con)
    pending = 0  # bytes waiting in _lines: flushed together (one set of queries, not per file)
    for p, rel, kind in input_files(path):
        loaded.files.append(rel)
        loaded.kinds.add(kind)
        if kind == "ndjson" and _load_ndjson_fast(p, rel, loaded.con):
            continue
        if kind == "ndjson":
            _load_ndjson(p, rel, loaded)
        else:
            _load_document(p, rel, loaded)
        pending += p.stat().st_size
        if pending > _FLUSH_BYTES:
            _flush(loaded, bundle_types)
            pending = 0
    _flush(loaded, bundle_types)
    if len(loaded.kinds) > 1:
        log.warning(
            "%s holds both Bundles and NDJSON: both are read; a resource present in both is "
            "read twice (duplicates are then reported by validation)",
            path,
        )
    _unwrap_contained(con)
    return loaded


def _open(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _chunks(path: Path) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, lines) in ~16 MiB chunks; the last line may lack "\\n"."""
    first, rest = 1, b""
    with _open(path) as handle:
        while chunk := handle.read(_CHUNK):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield first, lines
            first += len(lines)
    if rest:
        yield first, [rest]


def _line_count(path: Path) -> int | None:
    """Lines of the file (a last line without "\n" counts), or None when any is blank."""
    lines, last, blank = 0, b"\n", False
    try:
        with _open(path) as handle:
            while chunk := handle.read(_CHUNK):
                lines += chunk.count(b"\n")
                blank = blank or b"\n\n" in chunk or (last == b"\n" and chunk[:1] == b"\n")
                blank = blank or b"\n\r\n" in chunk
                last = chunk[-1:]
    except (OSError, EOFError):
        return None
    if lines == 0 and last == b"\n":
        return None  # empty file: the careful path says so
    return None if blank else lines + (last != b"\n")


def _load_ndjson_fast(path: Path, rel: str, con: duckdb.DuckDBPyConnection) -> bool:
    """The common case, read by DuckDB alone (``read_ndjson_objects``, multi-threaded): every
    line is a JSON object with a resourceType and none is a Bundle. False (nothing
    inserted) when the file needs the careful line-by-line path."""
    lines = _line_count(path)
    if lines is None:
        return False
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _fast AS SELECT row_number() OVER () AS n, json "
            "FROM read_ndjson_objects(?, ignore_errors = true)",
            [str(path)],
        )
    except duckdb.Error:
        return False
    row = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE json IS NULL OR json_type(json) <> 'OBJECT' "
        "OR nullif(json->>'resourceType', '') IS NULL OR json->>'resourceType' = 'Bundle') "
        "FROM _fast"
    ).fetchone()
    if row is None or row[0] != lines or row[1]:
        con.execute("DROP TABLE _fast")
        return False
    con.execute(
        "INSERT INTO resources SELECT ?, 'line ' || n, json->>'resourceType', json->>'id', "
        "nullif(json->>'id', ''), NULL, json FROM _fast",
        [rel],
    )
    con.execute("DROP TABLE _fast")
    return True


def _load_ndjson(path: Path, rel: str, loaded: LoadedResources) -> None:
    """Insert the non-blank lines of one NDJSON file into ``_lines`` (UTF-8 checked).

    A truncated or corrupt ``.gz`` is read up to the damage: the chunk that failed is read
    again line by line, so every complete line before it is kept and the rejection names
    the first line that could not be read."""
    done = 1  # the first line not inserted yet
    try:
        for first, lines in _chunks(path):
            _insert_raw(loaded, rel, first, lines)
            done = first + len(lines)
    except (OSError, EOFError):
        lines = []
        try:
            with _open(path) as handle:
                for i, line in enumerate(handle, 1):
                    if i >= done:
                        lines.append(line.rstrip(b"\n"))
        except (OSError, EOFError) as exc:
            if lines and not lines[-1].endswith((b"}", b"}\r")):
                lines.pop()  # the cut line: reported below, not parsed
            _insert_raw(loaded, rel, done, lines)
            loaded.rejected.append(
                _reject(
                    rel,
                    f"line {done + len(lines)}",
                    RULE_UNPARSEABLE,
                    f"cannot read further: {exc}",
                )
            )


def _insert_raw(loaded: LoadedResources, rel: str, first: int, lines: list[bytes]) -> None:
    """Lines numbered from ``first`` into ``_lines``; blank ones skipped, non-UTF-8 rejected."""
    numbers, texts = [], []
    for i, line in enumerate(lines):
        raw = line.rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            loaded.rejected.append(
                _reject(rel, f"line {first + i}", RULE_UNPARSEABLE, f"not UTF-8: {exc}")
            )
            continue
        numbers.append(first + i)
    _insert_lines(loaded.con, rel, numbers, texts)


def _load_document(path: Path, rel: str, loaded: LoadedResources) -> None:
    """One JSON file (a Bundle or one resource) as one ``_lines`` row (line 0)."""
    try:
        with _open(path) as handle:
            data = handle.read()
        text = data.decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        loaded.rejected.append(_reject(rel, "", RULE_UNPARSEABLE, f"cannot read the file: {exc}"))
        return
    _insert_lines(loaded.con, rel, [0], [text])


def _insert_lines(
    con: duckdb.DuckDBPyConnection, rel: str, numbers: list[int], texts: list[str]
) -> None:
    if not texts:
        return
    batch = pa.table({"line": pa.array(numbers, pa.int64()), "text": pa.array(texts, pa.string())})
    con.register("_batch", batch)
    try:
        con.execute("INSERT INTO _lines SELECT ?, line, text FROM _batch", [rel])
    finally:
        con.unregister("_batch")


def _flush(loaded: LoadedResources, bundle_types: Sequence[str]) -> None:
    """Move ``_lines`` into ``resources``/``refs``; reject what is not a resource."""
    con = loaded.con
    types = ", ".join("'" + t.replace("'", "''") + "'" for t in bundle_types) or "''"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _docs AS SELECT file, "
        "CASE WHEN line = 0 THEN '' ELSE 'line ' || line END AS pos, text, "
        "json_valid(text) AS ok FROM _lines"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _docs_ok AS SELECT file, pos, doc, is_object, "
        "CASE WHEN is_object THEN f[1] END AS kind, CASE WHEN is_object THEN f[2] END AS btype "
        "FROM (SELECT file, pos, doc, json_type(doc) = 'OBJECT' AS is_object, "
        "json_extract_string(doc, ['$.resourceType', '$.type']) AS f "
        "FROM (SELECT file, pos, CAST(text AS JSON) AS doc FROM _docs WHERE ok))"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE _flat AS {_UNWRAP.format(bundle_types=types)}")
    for file, pos, rid in con.execute(
        "SELECT file, pos, id FROM _flat WHERE nullif(resource_type, '') IS NULL"
    ).fetchall():
        loaded.rejected.append(
            _reject(
                file,
                rid or pos or "resource",
                RULE_INVALID,
                "not a FHIR resource: no resourceType",
                "",
            )
        )
    con.execute("DELETE FROM _flat WHERE nullif(resource_type, '') IS NULL")
    con.execute(
        "INSERT INTO resources SELECT file, CASE WHEN pos = '' THEN 'resource' ELSE pos END, "
        "resource_type, id, _key, contained_in, resource FROM _flat"
    )
    con.execute(
        "INSERT INTO refs SELECT full_url, _key, resource_type FROM _flat "
        "WHERE full_url IS NOT NULL AND _key IS NOT NULL"
    )
    for file, pos, text in con.execute(
        "SELECT file, pos, left(text, 200) FROM _docs WHERE NOT ok"
    ).fetchall():
        loaded.rejected.append(_reject(file, pos, RULE_UNPARSEABLE, "not valid JSON", text))
    for file, pos in con.execute(
        "SELECT file, pos FROM _docs_ok WHERE json_type(doc) <> 'OBJECT'"
    ).fetchall():
        loaded.rejected.append(_reject(file, pos, RULE_UNPARSEABLE, "not a JSON object"))
    for file, pos, rid, btype, n in con.execute(
        f"SELECT file, pos, doc->>'id', btype, greatest(1, len(json_extract(doc, '$.entry[*]'))) "
        f"FROM _docs_ok WHERE kind = 'Bundle' AND coalesce(btype, '') NOT IN ({types})"
    ).fetchall():
        message = f"Bundle.type {btype!r} is not read ({sorted(bundle_types)}); {n} entries"
        loaded.rejected.append(
            _reject(file, rid or pos or "bundle", RULE_UNSUPPORTED_BUNDLE, message, btype or "")
        )
    (without,) = con.execute(
        "SELECT count(*) FROM (SELECT unnest(json_extract(doc, '$.entry[*]')) AS e FROM _docs_ok "
        f"WHERE kind = 'Bundle' AND btype IN ({types})) WHERE json_type(e->'resource') IS NULL "
        "OR json_type(e->'resource') = 'NULL'"
    ).fetchone() or (0,)
    loaded.entries_without_resource += int(without)
    con.execute("DELETE FROM _lines")
    for table in ("_docs", "_docs_ok", "_flat"):  # free the copies before the next batch
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _unwrap_contained(con: duckdb.DuckDBPyConnection) -> None:
    """Contained resources as rows of their own (key ``<container>#<id>``)."""
    con.execute(
        """
        INSERT INTO resources
        SELECT r.file, r.pos, c->>'resourceType', c->>'id', r._key || '#' || (c->>'id'), r._key,
               c
        FROM resources r, LATERAL (SELECT unnest(CAST(r.resource->'contained' AS JSON[])) AS c)
        WHERE r.contained_in IS NULL AND json_type(r.resource->'contained') = 'ARRAY'
        """
    )


def _reject(file: str, row: str, rule: str, message: str, value: str = "") -> Rejected:
    return Rejected(SOURCE, file, row, "", value[:200], rule, message)
