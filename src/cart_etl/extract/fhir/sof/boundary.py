"""Experimental ``lowBoundary()``/``highBoundary()`` (FHIRPath continuous build
§5.11 "lowBoundary/highBoundary"; SQL on FHIR ShareableViewDefinition "Experimental
FHIRPath Functions"), as DuckDB SQL over the FHIR string form.

Decimals widen by half a unit of the last written digit; partial dates, dateTimes and
times are padded to the first/last instant, a missing time zone becoming ``+14:00``
(low) or ``-12:00`` (high).  The ``precision`` argument is not supported.
"""

from __future__ import annotations

from cart_etl.extract.fhir.sof import sqlbits as sb


def _decimal(v: str, high: bool) -> str:
    t = f"CAST({v} AS VARCHAR)"
    digits = f"(CASE WHEN contains({t}, '.') THEN length({t}) - instr({t}, '.') ELSE 0 END)"
    sign = "+" if high else "-"
    return (
        f"round(TRY_CAST({v} AS DOUBLE) {sign} 0.5 * pow(10, -{digits}), "
        f"CAST({digits} + 1 AS INTEGER))"
    )


def _date(s: str, high: bool) -> str:
    y = f"regexp_extract({s}, '^(\\d{{4}})', 1)"
    m = f"regexp_extract({s}, '^\\d{{4}}-(\\d{{2}})', 1)"
    d = f"regexp_extract({s}, '^\\d{{4}}-\\d{{2}}-(\\d{{2}})', 1)"
    if not high:
        return (
            f"({y} || '-' || coalesce(nullif({m}, ''), '01') || '-' || "
            f"coalesce(nullif({d}, ''), '01'))"
        )
    last = f"strftime(last_day(make_date(CAST({y} AS BIGINT), CAST({m} AS BIGINT), 1)), '%Y-%m-%d')"
    return (
        f"(CASE WHEN {m} = '' THEN {y} || '-12-31' WHEN {d} = '' THEN {last} ELSE "
        f"{y} || '-' || {m} || '-' || {d} END)"
    )


def _time(t: str, high: bool) -> str:
    parts = [
        (f"regexp_extract({t}, '^(\\d{{2}})', 1)", "23" if high else "00"),
        (f"regexp_extract({t}, '^\\d{{2}}:(\\d{{2}})', 1)", "59" if high else "00"),
        (f"regexp_extract({t}, '^\\d{{2}}:\\d{{2}}:(\\d{{2}})', 1)", "59" if high else "00"),
    ]
    hms = " || ':' || ".join(f"coalesce(nullif({p}, ''), '{dflt}')" for p, dflt in parts)
    frac = f"regexp_extract({t}, '^\\d{{2}}:\\d{{2}}:\\d{{2}}\\.(\\d+)', 1)"
    pad = "'9'" if high else "'0'"
    return f"({hms} || '.' || rpad(left({frac}, 3), 3, {pad}))"


def _datetime(s: str, high: bool) -> str:
    t = f"coalesce(nullif(regexp_extract({s}, 'T(.*)$', 1), ''), '')"
    tz = f"regexp_extract({s}, 'T.*(Z|[+-]\\d{{2}}:\\d{{2}})$', 1)"
    dflt = "'-12:00'" if high else "'+14:00'"
    return f"({_date(s, high)} || 'T' || {_time(t, high)} || coalesce(nullif({tz}, ''), {dflt}))"


def boundary_sql(
    names: sb.Names, v: str, fhir_type: str, high: bool, precision: str | None
) -> tuple[str, str]:
    """SQL of the boundary of JSON value ``v`` and its FHIR type (``""`` when decided at
    run time, as VARCHAR)."""
    if precision is not None:
        from cart_etl.extract.fhir.sof.errors import ViewDefinitionError

        raise ViewDefinitionError(
            "lowBoundary()/highBoundary(): the precision argument is not supported"
        )
    fam = sb.family(fhir_type)
    s = "json_extract_string({v}, '$')"
    if fhir_type == "date":
        return sb.bind(names, v, _date(s, high)), "date"
    if fhir_type in ("dateTime", "instant"):
        return sb.bind(names, v, _datetime(s, high)), "dateTime"
    if fhir_type == "time":
        return sb.bind(names, v, _time(s, high)), "time"
    if fam in ("decimal", "integer"):
        return sb.bind(names, v, _decimal("{v}", high)), "decimal"
    body = (
        f"(CASE WHEN {{v}} IS NULL THEN NULL WHEN json_type({{v}}) IN {sb.NUMERIC_JSON} "
        f"THEN CAST({_decimal('{v}', high)} AS VARCHAR) "
        f"WHEN json_type({{v}}) <> 'VARCHAR' THEN NULL "
        f"WHEN regexp_matches({s}, '^\\d{{4}}(-\\d{{2}}(-\\d{{2}})?)?$') THEN {_date(s, high)} "
        f"WHEN regexp_matches({s}, '^\\d{{4}}-\\d{{2}}-\\d{{2}}T') THEN {_datetime(s, high)} "
        f"WHEN regexp_matches({s}, '^\\d{{2}}:\\d{{2}}') THEN {_time(s, high)} END)"
    )
    return sb.bind(names, v, body), ""
