"""Streams one patient's resources into its transaction Bundle and the Bulk-Data NDJSON files.

Each resource is serialized once without its references; the reference members are
appended as pre-rendered byte suffixes, one per output flavour: the bundle entry
(``urn:uuid:`` references plus the entry's POST request) and the NDJSON line
(``<ResourceType>/<id>`` references). Planned FHIR defects are applied on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import IO

import orjson

from cart_etl.synth.defects.fhir import PatientDefects
from cart_etl.synth.fhir.context import Ref
from cart_etl.synth.fhir.elements import DUMP_OPTS, Json


def ref_suffixes(rtype: str, refs: Iterable[Ref]) -> tuple[bytes, bytes]:
    """Bytes closing a resource: (bundle form incl. the entry's request, NDJSON form + newline)."""
    bundle: Json = {}
    ndjson: Json = {}
    for element, target, rid, many in refs:
        b_ref: Json = {"reference": f"urn:uuid:{rid}"}
        n_ref: Json = {"reference": f"{target}/{rid}"}
        bundle[element] = [b_ref] if many else b_ref
        ndjson[element] = [n_ref] if many else n_ref
    request = b',"request":{"method":"POST","url":"%s"}}' % rtype.encode()
    if not bundle:
        return b"}" + request, b"}\n"
    return (
        b"," + orjson.dumps(bundle)[1:] + request,
        b"," + orjson.dumps(ndjson)[1:] + b"\n",
    )


class PatientSink:
    """Streams one patient's resources into its bundle file and the NDJSON files.

    Each resource is dumped and written straight to buffered file handles: holding the
    patient's bodies or orjson results in memory (or copying them into growing bytearrays)
    made allocation cost more than the serialization itself.
    """

    def __init__(
        self,
        bundle: IO[bytes],
        bundle_id: str,
        ndjson_handle: Callable[[str], IO[bytes]],
        ndjson_lines: dict[str, int],
        defects: PatientDefects | None,
    ) -> None:
        """Open the bundle's JSON.

        Args:
            bundle: The patient's bundle file.
            bundle_id: Resource id of the Bundle.
            ndjson_handle: Opens (on first use) the NDJSON file of a resource type.
            ndjson_lines: Lines written so far per resource type (shared running counts,
                updated per resource).
            defects: The patient's planned defects, or None when it gets none.
        """
        self._bundle = bundle
        self._ndjson = ndjson_handle
        self._lines = ndjson_lines
        self._defects = defects
        self._suffixes: dict[tuple[str, tuple[Ref, ...]], tuple[bytes, bytes]] = {}
        self._sep = ""
        head = b'{"resourceType":"Bundle","id":"%s","type":"transaction","entry":['
        bundle.write(head % bundle_id.encode())

    def emit(self, rtype: str, rid: str, body: Json, refs: tuple[Ref, ...], flags: int) -> None:
        """Write one resource as a bundle entry and as an NDJSON line."""
        if flags and self._defects is not None:
            body, refs = self._defects.apply(rtype, rid, body, refs, flags)
        head = orjson.dumps(body, option=DUMP_OPTS)[:-1]  # reopen the object for the refs
        key = (rtype, refs)
        sfx = self._suffixes.get(key)
        if sfx is None:
            sfx = self._suffixes[key] = ref_suffixes(rtype, refs)
        # One concatenation + one write per output beats several small buffered writes.
        entry = f'{self._sep}{{"fullUrl":"urn:uuid:{rid}","resource":'.encode()
        self._bundle.write(entry + head + sfx[0])
        self._sep = ","
        self._ndjson(rtype).write(head + sfx[1])
        self._lines[rtype] += 1

    def finish(self) -> None:
        """Close the bundle's JSON.

        Raises:
            RuntimeError: A planned defect found no resource (candidate count out of sync).
        """
        if self._defects is not None:
            self._defects.check_done()
        self._bundle.write(b"]}\n")
