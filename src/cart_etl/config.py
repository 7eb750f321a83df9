"""Settings for a cart_etl run: paths, site timezone and the pseudonymisation key."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cart_etl.errors import ConfigurationError, MissingSecretError

SECRET_ENV = "CART_ETL_SECRET"
DEFAULT_TIMEZONE = "Asia/Shanghai"
# Repository layout: the data folders sit beside src/ in a checkout.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _default_mappings_dir() -> Path:
    return Path(os.environ.get("CART_ETL_MAPPINGS", PROJECT_ROOT / "mappings"))


def _default_schemas_dir() -> Path:
    return Path(os.environ.get("CART_ETL_SCHEMAS", PROJECT_ROOT / "schemas"))


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know that is not in the data.

    Attributes:
        mappings_dir: folder of code maps, site mappings and grading rules.
        schemas_dir: folder of contracts (OMOP DDL, raw export specs).
        site_timezone: IANA zone applied to naive timestamps of a site export.
        secret: key for keyed hashes of MRNs; read from ``CART_ETL_SECRET``.
        duckdb_memory_limit: DuckDB's memory cap during a run (``CART_ETL_DUCKDB_MEMORY``,
            default 1GB); larger sorts and inserts spill to disk instead of growing RSS.
    """

    mappings_dir: Path = field(default_factory=_default_mappings_dir)
    schemas_dir: Path = field(default_factory=_default_schemas_dir)
    site_timezone: str = DEFAULT_TIMEZONE
    secret: str | None = field(default_factory=lambda: os.environ.get(SECRET_ENV) or None)
    duckdb_memory_limit: str = field(
        default_factory=lambda: os.environ.get("CART_ETL_DUCKDB_MEMORY") or "1GB"
    )

    @property
    def tz(self) -> ZoneInfo:
        """The site timezone as a ZoneInfo, with a clear error for a bad name."""
        try:
            return ZoneInfo(self.site_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigurationError(
                f"Unknown site timezone {self.site_timezone!r}.",
                fix="use an IANA name such as 'Asia/Shanghai'.",
            ) from exc

    def require_secret(self) -> str:
        """Return the pseudonymisation key or stop the run with the fix."""
        if not self.secret:
            raise MissingSecretError(
                f"This run links patients across sources and needs a pseudonymisation key, "
                f"but {SECRET_ENV} is not set.",
                fix=f"export {SECRET_ENV}=<a long random string kept outside the repository> "
                "and use the same value for every run on this store.",
            )
        return self.secret

    def pseudonymise(self, identifier: str) -> str:
        """Keyed hash (HMAC-SHA256, hex, 32 chars) of an identifier such as an MRN."""
        key = self.require_secret().encode()
        return hmac.new(key, identifier.strip().encode(), hashlib.sha256).hexdigest()[:32]
