"""cart_etl exceptions, grouped by what the caller should do."""

from __future__ import annotations

from dataclasses import dataclass


class CartEtlError(Exception):
    """Base class. ``exit_code`` is what the CLI returns for it."""

    exit_code = 2

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message plus the fix, as printed by the CLI."""
        return f"{self.message} Fix: {self.fix}" if self.fix else self.message


class ConfigurationError(CartEtlError):
    """Settings are missing or wrong: the operator must change configuration, then re-run."""


class MissingSecretError(ConfigurationError):
    """A run needs the pseudonymisation key and ``CART_ETL_SECRET`` is not set."""


class MissingDependencyError(ConfigurationError):
    """An optional dependency is not installed."""


class SourceError(CartEtlError):
    """A source cannot be read at all (fatal for this source); retry once it is fixed."""


class SourceUnavailableError(SourceError):
    """Transient: database down, file locked. Retrying later may succeed."""


class MappingError(CartEtlError):
    """A site or code mapping is inconsistent with the data or itself; fix the mapping file."""


class StoreError(CartEtlError):
    """The DuckDB store cannot be opened, is locked by another run, or is corrupt."""


class StoreLockedError(StoreError):
    """Another run holds the store; wait for it or point at another file."""


@dataclass(frozen=True, slots=True)
class FailureCase:
    """One rejected value: where it was, which rule refused it, and how to fix it."""

    source: str
    file: str
    row: str
    field: str
    value: str
    rule_id: str
    message: str


class DataError(CartEtlError):
    """Rows were rejected: they are quarantined and the run continues (exit code 1)."""

    exit_code = 1


class ValidationError(DataError):
    """Lazy validation collected failure cases; ``cases`` lists every one."""

    def __init__(self, message: str, cases: list[FailureCase], *, fix: str | None = None) -> None:
        self.cases = cases
        super().__init__(message, fix=fix)


class StoreVersionError(StoreError):
    """The store was written with another layout (schema version) than this package reads."""


class StoreFullError(StoreError):
    """The disk (or a file-size limit) ran out while the store was written."""
