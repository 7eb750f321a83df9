"""`cart-etl report` end to end on the fixture store: files, self-contained HTML, JSON, CLI,
and rendering in headless Chromium when it is installed (Debian package `chromium`)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess

import pytest
from lxml import etree
from PIL import Image
from typer.testing import CliRunner

from cart_etl.analyze.published import STATUSES, leaves, load_published
from cart_etl.analyze.report import write_report
from cart_etl.cli import app

SECTIONS = (
    "Published vs reproduced",
    "known inconsistencies",
    "Table 2",
    "Figure 1",
    "Figure 2",
    "Figure 3",
    "Figure 4",
    "Supplementary Table S4",
    "physician-recorded grade",
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def written(con, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report, paths = write_report(con, out, store="fixture.duckdb")
    return out, report, paths


def test_files_written(written):
    out, _, paths = written
    assert paths.html.exists() and paths.markdown.exists() and paths.json.exists()
    names = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert names == ["figure1.png", "figure2.png", "figure3.png", "figure4.png"]
    for p in paths.figures:
        with Image.open(p) as img:
            assert img.format == "PNG" and img.width > 600 and img.height > 400


def test_html_is_self_contained_and_well_formed(written):
    _, _, paths = written
    text = paths.html.read_text(encoding="utf-8")
    # strict XML parse of the whole page (every tag closed, attributes quoted)
    root = etree.fromstring(text.replace("<!DOCTYPE html>", "", 1).encode("utf-8"))
    body = "".join(root.itertext())
    for title in SECTIONS:
        assert title in body, title
    assert body.index("Published vs reproduced") < body.index("Table 2")  # report opens with it
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing to fetch: readable offline
    assert "<script" not in text
    images = root.findall(".//img")
    assert len(images) == 4
    for img in images:
        src = img.get("src")
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as png:
            png.verify()


def test_json_lists_every_published_figure(written):
    _, report, paths = written
    doc = json.loads(paths.json.read_text(encoding="utf-8"))
    n_leaves = len(list(leaves(load_published())))
    assert len(doc["published_vs_reproduced"]) == n_leaves
    assert sum(doc["summary"].values()) == n_leaves
    assert set(doc["summary"]) == set(STATUSES)
    assert doc["summary"] == report.summary
    ids = [e["id"] for e in doc["known_inconsistencies"]]
    assert ids == [e["id"] for e in load_published()["known_inconsistencies"]]
    assert all("No explanation" not in e["arithmetic"] for e in doc["known_inconsistencies"])
    assert doc["results"]["s4_logistic"]["with_crs_grade"]["estimable"] is False


def test_markdown_links_the_figures(written):
    out, _, paths = written
    md = paths.markdown.read_text(encoding="utf-8")
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (out / link).exists()
    assert md.count("](figures/") == 4


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_html_renders_in_headless_chromium(written, tmp_path):
    _, _, paths = written
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    url = paths.html.resolve().as_uri()
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Published vs reproduced" in dom.stdout
    assert dom.stdout.count("<img") == 4
    console_errors = [
        line
        for line in dom.stderr.splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line
    ]
    assert console_errors == []
    shot = tmp_path / "page.png"
    res = subprocess.run(
        [CHROMIUM, *flags, "--window-size=1280,2000", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0 and shot.exists()
    with Image.open(shot) as img:
        # the page is not blank: many distinct colours (text, tables, status cells)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


def test_cli_report(store_path, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli_report"
    res = runner.invoke(app, ["report", "--store", str(store_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "published vs reproduced:" in res.output
    assert "known inconsistency: mrd_cr_p" in res.output
    assert (out / "report.html").exists() and (out / "report.json").exists()


def test_cli_report_missing_store_is_a_one_line_error(tmp_path):
    res = CliRunner().invoke(
        app, ["report", "--store", str(tmp_path / "none.duckdb"), "--out", str(tmp_path)]
    )
    assert res.exit_code == 2
    assert "does not exist" in res.output and "Traceback" not in res.output


def test_cli_report_store_without_marts(tmp_path):
    import duckdb

    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    res = CliRunner().invoke(app, ["report", "--store", str(empty), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "cart-etl run" in res.output
