"""Build the staging context (dates, concepts, units, value maps) from a source's mapping.

Everything a site-specific rule needs comes from the site YAML; nothing here names a
site. FHIR sources use standard systems (LOINC, RxNorm, SNOMED CT, UCUM) from
``mappings/fhir/*.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cart_etl.extract.site.spec import FileSpec, ItemSpec, SiteMapping, local_system, normalize_key
from cart_etl.mappings import Mappings, active
from cart_etl.stage.fhir_concepts import staging_concepts
from cart_etl.stage.staging import DateFormats, StagingContext, ValueMaps

# XLSX date cells arrive as ISO text from the extractor (native Excel date-times).
XLSX_NATIVE_FORMATS: tuple[str, ...] = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
# Which attribute of an item/lookup entry holds the canonical key, by lookup kind.
CANONICAL_KEYS: tuple[str, ...] = ("item", "test", "drug", "device", "route")


def _item_codes(mapping: SiteMapping, spec: FileSpec) -> list[tuple[str, ItemSpec]]:
    """(code system, item) of every item a long or wide file charts.

    A long file codes its rows in the item column; a wide file codes each item's records
    with the system of the item's own column, as the extractor writes it (output literals).
    """
    if spec.item_column:
        system = local_system(mapping.site, spec, spec.item_column)
        return [(system, item) for item in spec.items.values()]
    found: list[tuple[str, ItemSpec]] = []
    for output in spec.outputs:
        item = spec.find_item(output.item) if output.item is not None else None
        if item is None:
            continue
        coded = {
            a.column.removesuffix("_code")
            for a in output.assigns
            if a.column.endswith("_code") and a.literal == output.item
        }
        found += [
            (a.literal, item)
            for a in output.assigns
            if a.literal and a.column.endswith("_system") and a.column[: -len("_system")] in coded
        ]
    return found


def _dates(spec: FileSpec) -> DateFormats | None:
    opts: Mapping[str, Any] = spec.options
    primary: list[str] = []
    if spec.format == "xlsx" or opts.get("datetime_cells") == "excel_native":
        primary += XLSX_NATIVE_FORMATS
    if spec.datetime_format:
        primary.append(spec.datetime_format)
    if opts.get("datetime_format_without_offset"):
        primary.append(str(opts["datetime_format_without_offset"]))
    formats = tuple(primary) + tuple(spec.alternate_datetime_formats)
    if not formats:
        return None
    return DateFormats(formats, str(opts.get("precision", "second")))


def _canonical(entry: object) -> str | None:
    if isinstance(entry, Mapping):
        for key in CANONICAL_KEYS:
            if key in entry:
                return str(entry[key])
        return None
    return None if entry is None else str(entry)


def _ucum(entry: object) -> str | None:
    if isinstance(entry, Mapping):
        value = entry.get("ucum")
        return None if value is None else str(value)
    return None if entry is None else str(entry)


def context_from_site(mapping: SiteMapping) -> tuple[StagingContext, ValueMaps]:
    """Staging context and value maps of one site mapping (files or SQL tables)."""
    dates: dict[str, DateFormats] = {}
    concepts: dict[tuple[str, str], str] = {}
    units: dict[str, str] = {}
    default_units: dict[str, str] = {}
    devices: list[tuple[str, str]] = []
    flow_regex = r"(\d+(?:\.\d+)?)\s*L/min"
    values: dict[str, dict[str, str]] = {}
    for spec in mapping.files.values():
        formats = _dates(spec)
        if formats is not None:
            # Rows carry the file name (file delivery) or the table name (SQL delivery).
            dates[spec.name] = formats
            dates[spec.table] = formats
        for lookup_name, table in spec.lookups.items():
            if lookup_name in ("units", "dose_units") and isinstance(table, Mapping):
                for printed, entry in table.items():
                    code = _ucum(entry)
                    if code:
                        units[normalize_key(str(printed))] = code
            if lookup_name == "oxygen_devices" and isinstance(table, Mapping):
                flow_regex = str(table.get("flow_regex", flow_regex))
                devices += [(str(d["pattern"]), str(d["device"])) for d in table.get("devices", [])]
        if spec.items:
            for system, item in _item_codes(mapping, spec):
                key = _canonical(item.attributes)
                if key is not None:
                    concepts[(system, item.key)] = key
                    default = item.attributes.get("default_unit")
                    if default is not None and str(default) != "":
                        ucum = units.get(normalize_key(str(default)))
                        if ucum:
                            default_units[key] = ucum
        for column, col in spec.columns.items():
            if col.lookup and col.lookup in spec.lookups:
                table = spec.lookups[col.lookup]
                system = local_system(mapping.site, spec, column)
                for entity, target in col.targets.items():
                    if target.column is None:
                        continue
                    mapped = {
                        normalize_key(str(k)): _canonical(v)
                        for k, v in table.items()
                        if isinstance(table, Mapping)
                    }
                    if target.system_column:
                        concepts.update({(system, k): v for k, v in mapped.items() if v})
                    elif target.column in ("route", "indication", "site", "death_cause"):
                        values[f"{entity}.{target.column}"] = {k: v for k, v in mapped.items() if v}
            for key in ("values", "special_values"):
                coded = col.options.get(key)
                if isinstance(coded, Mapping):
                    for entity, target in col.targets.items():
                        if target.column:
                            values.setdefault(f"{entity}.{target.column}", {}).update(
                                {normalize_key(str(k)): _text(v) for k, v in coded.items()}
                            )
    ctx = StagingContext(
        timezone=mapping.timezone,
        dates=dates,
        concepts=concepts,
        units=units,
        default_units=default_units,
        oxygen_devices=tuple(devices),
        flow_regex=flow_regex,
    )
    return ctx, ValueMaps(values)


def _text(value: object) -> str:
    """Mapping values as staging expects them: booleans as 'true'/'false'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def context_from_fhir(
    timezone: str, mappings: Mappings | None = None
) -> tuple[StagingContext, ValueMaps]:
    """Staging context for FHIR sources: the items of ``fhir/concept_map.csv`` and the units
    and value maps of ``fhir/concepts.yaml`` of
    ``mappings`` (default: the active set; a FHIR profile folder may layer codes over it).

    FHIR numbers are JSON numbers, so a decimal comma is a malformed resource
    (``allow_decimal_comma=False``); timestamps are ISO 8601 with offsets.
    """
    chosen = mappings or active()
    data = chosen.load("fhir/concepts.yaml")
    concepts = staging_concepts(chosen)
    units = {u: u for u in data["units"]}
    values = {
        k: {normalize_key(str(a)): str(b) for a, b in v.items()} for k, v in data["values"].items()
    }
    ctx = StagingContext(
        timezone=timezone, concepts=concepts, units=units, allow_decimal_comma=False
    )
    return ctx, ValueMaps(values)
