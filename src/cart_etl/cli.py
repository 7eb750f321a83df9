"""`cart-etl`: the command-line interface (a thin Typer layer over the package)."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cart_etl.errors import CartEtlError, ConfigurationError

if TYPE_CHECKING:
    import pandas as pd

    from cart_etl.analyze.report import Report, ReportPaths
    from cart_etl.pipeline import RunResult
    from cart_etl.synth.generate import SynthSummary

app = typer.Typer(
    name="cart-etl",
    help="ETL, validation and analysis of CD19 CAR-T / CRS clinical data into a DuckDB OMOP store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

SITE_HELP = (
    "Site: a name (mappings/sites/<site>.yaml or mappings/sites/<site>/), or a site folder "
    "anywhere holding site.yaml and rule overrides."
)
FHIR_MODE_HELP = "fast (views only) or strict (also validates every resource with R4B models)."
FLAT_HELP = (
    "Folder of per-view Parquet files (<view>.parquet or <view>/*.parquet) written by the "
    "same ViewDefinitions on another engine (Pathling/Spark) or by `cart-etl flatten`."
)
PROFILE_HELP = "Folder of FHIR rule overrides (fhir/*.yaml, validation/...) over mappings/."

P = ParamSpec("P")
R = TypeVar("R")


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn package errors into one clear line and the documented exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # the command's own exit code / usage errors
        except CartEtlError as exc:
            err_console.print(
                f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                where = Path(exc.filename).parent if exc.filename else Path.cwd()
                err_console.print(
                    f"[bold red]error:[/] the disk is full ({exc.strerror}) writing "
                    f"{exc.filename or 'a file'}. Fix: free disk space on the filesystem of "
                    f"{where} (or raise the quota / file-size limit), then re-run.",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(2) from None
            err_console.print(
                f"[bold red]error:[/] {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
            )
            raise typer.Exit(2) from None
        except (SystemExit, GeneratorExit):
            raise
        except BaseException as exc:  # also a Rust panic (pyo3 PanicException) of polars
            if os.environ.get("CART_ETL_DEBUG"):
                raise
            text = str(exc).strip().splitlines()
            err_console.print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {text[0] if text else ''} "
                "(set CART_ETL_DEBUG=1 for the traceback and report it)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(3) from None

    return wrapper


def _progress(quiet: bool, total: int, label: str) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet or not sys.stderr.isatty(),
    )


@app.command()
@cli_errors
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output folder (created if missing).")],
    patients: Annotated[
        int,
        typer.Option(
            min=1,
            help="61 = the calibrated reference cohort; any other N = an uncalibrated registry.",
        ),
    ] = 61,
    seed: Annotated[
        int, typer.Option(help="Random seed (same seed -> byte-identical files).")
    ] = 2025,
    defects: Annotated[
        bool, typer.Option("--defects/--no-defects", help="Inject realistic export defects.")
    ] = True,
    fhir: Annotated[
        bool, typer.Option("--fhir/--no-fhir", help="Also write FHIR bundles and NDJSON.")
    ] = True,
    background_patients: Annotated[
        int,
        typer.Option(
            min=0,
            help="Non-CAR-T hospital patients added to the FHIR output only (a whole-hospital "
            "export: --patients P --background-patients 9P is 90 % without CAR-T).",
        ),
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
) -> None:
    """Generate the synthetic cohort: site export, FHIR R4, truth and injected-defect tables."""
    from cart_etl.synth.generate import generate

    with _progress(quiet, patients, "synth") as progress:
        task = progress.add_task("patients", total=patients)
        summary = generate(
            out,
            patients=patients,
            seed=seed,
            defects=defects,
            fhir=fhir,
            on_patient=lambda n: progress.update(task, completed=n),
            background_patients=background_patients,
        )
    if not quiet:
        _print_synth_summary(
            summary.out_dir, summary.patients, summary.calibrated, summary.defects, summary.files
        )


def _print_synth_summary(
    out: Path, patients: int, calibrated: bool, defects: int, files: dict[str, int]
) -> None:
    kind = "calibrated reference cohort" if calibrated else "uncalibrated registry"
    console.print(f"[bold]cart-etl synth[/]: {patients} patients ({kind}) -> {out}")
    table = Table("site_export file", "rows", title=None)
    for name, rows in files.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    console.print(f"defects injected: {defects} (listed in {out / 'truth' / 'defects.csv'})")
    fhir_dir = out / "fhir"
    where_fhir = f"; FHIR: {fhir_dir}" if fhir_dir.exists() else ""
    console.print(f"truth: {out / 'truth' / 'patients.csv'}{where_fhir}")


def _study_window(text: str | None) -> tuple[date, date] | None:
    """Parse START:END; a malformed window is a configuration error with the fix."""
    from cart_etl.errors import ConfigurationError

    if text is None:
        return None
    try:
        start, end = (date.fromisoformat(part) for part in text.split(":"))
    except ValueError:
        raise ConfigurationError(
            f"--study-window {text!r} is not START:END.", fix="write e.g. 2020-04-01:2023-10-31."
        ) from None
    if end < start:
        raise ConfigurationError(
            f"--study-window {text!r} ends before it starts.", fix="swap the dates."
        )
    return start, end


@app.command("validate")
@cli_errors
def validate_cmd(
    source: Annotated[
        str | None,
        typer.Argument(
            help="Site export folder, or a SQLAlchemy URL (sqlite:///x.db, postgresql://...)."
        ),
    ] = None,
    site: Annotated[str | None, typer.Option(help=SITE_HELP)] = None,
    fhir: Annotated[
        Path | None, typer.Option(help="FHIR R4 bundles and/or Bulk NDJSON (file or folder).")
    ] = None,
    fhir_mode: Annotated[str, typer.Option(help=FHIR_MODE_HELP)] = "fast",
    fhir_profile: Annotated[Path | None, typer.Option(help=PROFILE_HELP)] = None,
    flat: Annotated[Path | None, typer.Option("--flat", help=FLAT_HELP)] = None,
    report: Annotated[
        Path, typer.Option(help="Folder for validation.html and validation.json.")
    ] = Path("validation_report"),
    expectations: Annotated[
        bool,
        typer.Option("--expectations/--no-expectations", help="Run the great-expectations suites."),
    ] = True,
    study_window: Annotated[
        str | None,
        typer.Option(
            help="Infusions must fall in START:END (ISO dates), e.g. 2020-04-01:2023-10-31."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Check an export before it is accepted (exit 0 clean, 1 quarantined/warnings, 2 fatal)."""
    from cart_etl.errors import ConfigurationError
    from cart_etl.pipeline import Source, validate_only
    from cart_etl.validate.report import write_report

    window = _study_window(study_window)
    if fhir is not None or flat is not None:
        delivery = _fhir_source(fhir, flat, fhir_mode, fhir_profile)
        _, result = validate_only(delivery, expectations=expectations, study_window=window)
    elif source is None or site is None:
        raise ConfigurationError(
            "validate needs a source and its site mapping, or --fhir.",
            fix="run `cart-etl validate EXPORT --site NAME` or `cart-etl validate --fhir DIR`.",
        )
    else:
        delivery = Source(source, site)
        _, result = validate_only(delivery, expectations=expectations, study_window=window)
    html_path, _ = write_report(result, report)
    s = result.to_json()["summary"]
    line = (
        f"{s['rows_in']:,} rows: {s['rows_accepted']:,} accepted, "
        f"{s['rows_quarantined']:,} quarantined, {s['warnings']:,} warnings, "
        f"{s['expectations_failed']} failed expectations -> {html_path}"
    )
    if not quiet:
        console.print(line, highlight=False, soft_wrap=True)
    elif result.exit_code:  # quiet means no progress, never no reason for a failure
        err_console.print(f"[bold red]validate:[/] {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(result.exit_code)


@app.command("init-store")
@cli_errors
def init_store(
    store: Annotated[Path, typer.Option("--store", help="DuckDB file to create or upgrade.")],
) -> None:
    """Create (or upgrade) a DuckDB store with its schemas and the etl run log."""
    from cart_etl.load.duckdb_store import SCHEMAS, STORE_SCHEMA_VERSION, connect, init_store

    con = connect(store, upgrade=False)
    try:
        done = init_store(con, target=str(store))
    finally:
        con.close()
    what = "; ".join(done) if done else "already up to date"
    console.print(
        f"store ready: {store} (layout version {STORE_SCHEMA_VERSION}, schemas: "
        f"{', '.join(SCHEMAS)}): {what}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("run")
@cli_errors
def run_cmd(
    source: Annotated[
        str | None, typer.Option("--source", help="Site export folder or SQLAlchemy URL.")
    ] = None,
    site: Annotated[str | None, typer.Option(help=SITE_HELP)] = None,
    fhir: Annotated[
        Path | None, typer.Option("--fhir", help="FHIR R4 bundles or Bulk NDJSON folder.")
    ] = None,
    store: Annotated[Path, typer.Option(help="DuckDB store file.")] = Path("cart_etl.duckdb"),
    fhir_mode: Annotated[str, typer.Option(help=FHIR_MODE_HELP)] = "fast",
    fhir_profile: Annotated[Path | None, typer.Option(help=PROFILE_HELP)] = None,
    flat: Annotated[Path | None, typer.Option("--flat", help=FLAT_HELP)] = None,
    force: Annotated[bool, typer.Option(help="Reload even if the inputs are unchanged.")] = False,
    expectations: Annotated[
        bool, typer.Option(help="Run the post-load great-expectations suite.")
    ] = True,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the run summary as JSON.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Load one delivery into the DuckDB store: validate, derive, marts, OMOP (one transaction).

    Exit codes: 0 loaded (or skipped: inputs unchanged), 1 post-load checks failed (the store
    keeps its previous data; the failure is in etl.runs), 2 unusable input or store.
    """
    from cart_etl.config import Settings
    from cart_etl.pipeline import Source, run, summary_json

    given = [x for x in (source, fhir, flat) if x is not None]
    if len(given) != 1 or (source is not None and not site):
        raise ConfigurationError(
            "Give exactly one input: --source DIR --site NAME, --fhir DIR or --flat DIR.",
            fix="e.g. cart-etl run --source export/ --site tianjin_ref --store study.duckdb",
        )
    src = (
        Source(str(source), site)
        if source is not None
        else _fhir_source(fhir, flat, fhir_mode, fhir_profile)
    )
    Settings().check_secret()
    say = (lambda _m: None) if quiet or json_out else (lambda m: err_console.print(f"· {m}"))
    result = run(src, store, force=force, expectations=expectations, on_stage=say)
    if json_out:
        console.print_json(data=summary_json(result))
    elif not quiet:
        _print_run(result)
    if result.status == "failed" and (quiet or json_out):
        _print_failed_line(result)
    raise typer.Exit(result.exit_code)


def _fhir_source(
    fhir: Path | None, flat: Path | None, fhir_mode: str, fhir_profile: Path | None
) -> Any:
    """The Source of a FHIR input (resources, or per-view Parquet with ``--flat``)."""
    from cart_etl.errors import ConfigurationError, SourceError
    from cart_etl.pipeline import Source

    if fhir is not None and flat is not None:
        raise ConfigurationError(
            "--fhir and --flat name two inputs.", fix="give the FHIR folder or the flat folder."
        )
    if fhir_mode not in ("fast", "strict"):
        raise ConfigurationError(f"Unknown --fhir-mode {fhir_mode!r}.", fix="use fast or strict.")
    where = fhir if fhir is not None else flat
    assert where is not None
    if not where.exists():
        raise SourceError(
            f"{where} does not exist.",
            fix="point --fhir at a bundle, an NDJSON file or their folder (--flat: Parquet).",
        )
    profile = str(fhir_profile) if fhir_profile else None
    mode = "flat" if flat is not None else fhir_mode
    return Source(str(where), fhir=True, fhir_mode=mode, fhir_profile=profile)


@app.command("flatten")
@cli_errors
def flatten_cmd(
    fhir: Annotated[Path, typer.Option("--fhir", help="FHIR R4 bundles or Bulk NDJSON.")],
    out: Annotated[Path, typer.Option(help="Folder for <view>.parquet, one file per view.")],
    fhir_profile: Annotated[Path | None, typer.Option(help=PROFILE_HELP)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Run the SQL-on-FHIR views and write one Parquet file per view (what `--flat` reads).

    The same view files run on Pathling/Spark for exports that outgrow one machine
    (docs/scale-out.md); this command is the reference engine.
    """
    from cart_etl.config import Settings
    from cart_etl.pipeline import Source, open_mappings
    from cart_etl.stage.fhir_concepts import flatten

    profile = str(fhir_profile) if fhir_profile else None
    mappings = open_mappings(Source(str(fhir), fhir=True, fhir_profile=profile), Settings())
    written, rejected = flatten(fhir, mappings, out)
    if not quiet:
        console.print(f"{len(written)} views -> {out}; {rejected} inputs not readable as FHIR")


def _print_failed_line(result: Any) -> None:
    """One stderr line for a run whose post-load checks failed (printed even with --quiet)."""
    err_console.print(
        f"[bold red]run {result.run_id[:8]} failed:[/] {len(result.failures)} post-load "
        f"check(s) failed, the store keeps its previous data (etl.runs): "
        + "; ".join(result.failures),
        highlight=False,
        soft_wrap=True,
    )


def _print_run(result: Any) -> None:
    console.print(
        f"run {result.run_id[:8]} {result.status} in {result.seconds:.1f} s -> {result.store}"
        + (f" ({result.message})" if result.message else ""),
        highlight=False,
        soft_wrap=True,
    )
    if result.status != "skipped":
        console.print(
            f"{result.quarantined:,} rows quarantined, {result.warnings:,} warnings "
            "(etl.quarantine / etl.warnings)",
            highlight=False,
        )
    for failure in result.failures:
        err_console.print(f"[bold red]check failed:[/] {failure}", highlight=False)
    if result.consort:
        console.print(
            "CONSORT: " + " | ".join(f"{box} {n}" for box, n in result.consort), highlight=False
        )


@app.command()
@cli_errors
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its files.")] = Path(
        "work/demo"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Build the reference cohort, validate it, load it into DuckDB and summarise it.

    synth (61 patients, seed 2025) -> validation report -> `cart-etl run` of the site export
    into WORKDIR/cart_etl.duckdb -> CONSORT flow, per-group summary -> `cart-etl report`
    into WORKDIR/report (published vs reproduced).
    """
    from cart_etl.demo import run_demo

    result = run_demo(workdir, _DemoPrinter(quiet), summarise_groups=not quiet)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


class _DemoPrinter:
    """The ``demo.DemoObserver`` of the CLI: each step printed as its own command prints it."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    @contextmanager
    def synthesising(self, patients: int) -> Iterator[Callable[[int], None]]:
        with _progress(self.quiet, patients, "synth") as progress:
            task = progress.add_task("patients", total=patients)
            yield lambda n: progress.update(task, completed=n)

    def synthesised(self, summary: SynthSummary) -> None:
        if not self.quiet:
            _print_synth_summary(
                summary.out_dir,
                summary.patients,
                summary.calibrated,
                summary.defects,
                summary.files,
            )

    def validated(self, summary: dict[str, Any], html: Path) -> None:
        if not self.quiet:
            console.print(
                f"site export validated: {summary['rows_in']:,} rows, "
                f"{summary['rows_accepted']:,} accepted, {summary['rows_quarantined']:,} "
                f"quarantined, {summary['warnings']:,} warnings (the injected defects) -> {html}",
                highlight=False,
                soft_wrap=True,
            )

    def loaded(self, result: RunResult) -> None:
        if not self.quiet:
            _print_run(result)
        elif result.status == "failed":
            _print_failed_line(result)

    def grouped(self, groups: pd.DataFrame) -> None:
        _print_groups(groups)

    def reported(self, report: Report, paths: ReportPaths) -> None:
        _print_report(report, paths, self.quiet)


def _print_groups(groups: pd.DataFrame) -> None:
    """The per-group summary (``analyze.groups``) as a table; a missing median as None."""
    import pandas as pd

    table = Table(title="Analysed patients by group (marts.patient)")
    for col in groups.columns:
        table.add_column(str(col))
    for row in groups.itertuples(index=False):
        table.add_row(*("None" if pd.isna(v) else str(v) for v in row))
    console.print(table)


@app.command("report")
@cli_errors
def report_cmd(
    store: Annotated[Path, typer.Option("--store", help="DuckDB store written by cart-etl run.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.html/.md/.json.")] = Path(
        "report"
    ),
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Reproduce the reference study from the store: report.html, .md, .json and figures."""
    from cart_etl.analyze.report import report_store

    report, paths = report_store(store, out)
    _print_report(report, paths, quiet)


def _print_report(report: Report, paths: ReportPaths, quiet: bool) -> None:
    if not quiet:
        counts = ", ".join(f"{n} {s}" for s, n in report.summary.items())
        console.print(f"published vs reproduced: {counts}", highlight=False, soft_wrap=True)
        for c in report.comparisons:
            if c.status == "differs":
                why = f" (known inconsistency: {c.inconsistency})" if c.inconsistency else ""
                console.print(
                    f"  differs: {c.path}: published {c.published}, reproduced {c.reproduced}{why}",
                    highlight=False,
                    soft_wrap=True,
                )
    console.print(f"report: {paths.html}", highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point for ``python -m cart_etl``."""
    app()
