"""The vendored public FHIR R4 files are the bytes their provenance records, each with a licence.

`tests/data/public_fhir/` holds files copied unchanged from public repositories (Synthea R4
bundles and the HL7 FHIR R4 examples). `provenance.json` pins each one by repository, commit,
path and sha256; these tests read only local files (no network).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

PUBLIC_FHIR = Path(__file__).resolve().parents[1] / "data" / "public_fhir"
PROVENANCE = PUBLIC_FHIR / "provenance.json"
PROVENANCE_MD = PUBLIC_FHIR / "PROVENANCE.md"
BOOKKEEPING = {PROVENANCE, PROVENANCE_MD}
PERMISSIVE = {"Apache-2.0", "MIT", "BSD-2-Clause", "BSD-3-Clause", "CC0-1.0"}
LICENCE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "COPYING")
KEYS = {"file", "repo", "commit", "path", "sha256", "licence"}


def _entries() -> list[dict[str, str]]:
    return json.loads(PROVENANCE.read_text(encoding="utf-8"))


def _vendored() -> set[Path]:
    return {p for p in PUBLIC_FHIR.rglob("*") if p.is_file() and p not in BOOKKEEPING}


def test_every_entry_is_complete_and_pinned() -> None:
    entries = _entries()
    assert entries
    for entry in entries:
        assert set(entry) == KEYS, entry
        assert len(entry["commit"]) == 40, entry
        int(entry["commit"], 16)
        assert len(entry["sha256"]) == 64, entry
        assert entry["licence"] in PERMISSIVE, entry
        assert "/" in entry["repo"], entry
    files = [e["file"] for e in entries]
    assert len(files) == len(set(files))


@pytest.mark.parametrize("entry", _entries(), ids=lambda e: e["file"])
def test_vendored_file_matches_its_sha256(entry: dict[str, str]) -> None:
    path = PUBLIC_FHIR / entry["file"]
    assert path.is_file(), entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]


def test_every_file_on_disk_is_in_the_provenance() -> None:
    recorded = {PUBLIC_FHIR / e["file"] for e in _entries()}
    assert _vendored() == recorded


def test_every_folder_has_a_licence_file() -> None:
    folders = {p.parent for p in _vendored()}
    assert folders
    for folder in folders:
        assert any((folder / name).is_file() for name in LICENCE_NAMES), folder


def test_one_repository_per_folder() -> None:
    repos: dict[str, set[str]] = {}
    for entry in _entries():
        repos.setdefault(str(Path(entry["file"]).parent), set()).add(entry["repo"])
    assert all(len(r) == 1 for r in repos.values()), repos


def test_markdown_lists_every_file_with_its_commit_and_sha256() -> None:
    text = PROVENANCE_MD.read_text(encoding="utf-8")
    for entry in _entries():
        row = next((line for line in text.splitlines() if f"`{entry['file']}`" in line), None)
        assert row is not None, entry["file"]
        assert entry["commit"] in row
        assert entry["sha256"] in row
        assert entry["path"] in row


def test_vendored_json_is_fhir() -> None:
    for path in _vendored():
        if path.suffix != ".json" or path.name == "package.json":
            continue
        resource = json.loads(path.read_bytes())
        assert isinstance(resource.get("resourceType"), str), path
