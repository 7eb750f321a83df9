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
# A keyed hash is only as private as its key: refuse keys shorter than this.
MIN_SECRET_LENGTH = 16
_SECRET_FIX = (
    f"export {SECRET_ENV}=<a random string of at least {MIN_SECRET_LENGTH} characters kept "
    "outside the repository, e.g. from `openssl rand -hex 32`> and use the same value for every "
    "run on this store."
)
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
        secret: key for keyed hashes of identifiers; read from ``CART_ETL_SECRET`` (None when
            unset; an empty or short value is refused by ``require_secret``/``check_secret``).
        duckdb_memory_limit: DuckDB's memory cap during a run (``CART_ETL_DUCKDB_MEMORY``,
            default 1GB); larger sorts and inserts spill to disk instead of growing RSS.
    """

    mappings_dir: Path = field(default_factory=_default_mappings_dir)
    schemas_dir: Path = field(default_factory=_default_schemas_dir)
    site_timezone: str = DEFAULT_TIMEZONE
    secret: str | None = field(default_factory=lambda: os.environ.get(SECRET_ENV))
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
        """Return the pseudonymisation key or stop the run with the fix.

        Raises:
            MissingSecretError: ``CART_ETL_SECRET`` is unset, empty or shorter than
                ``MIN_SECRET_LENGTH`` characters.
        """
        if self.secret is None:
            raise MissingSecretError(
                f"This run pseudonymises identifiers and needs a key, but {SECRET_ENV} is not set.",
                fix=_SECRET_FIX,
            )
        self.check_secret()
        return self.secret

    def check_secret(self) -> None:
        """Refuse a key that is set but unusable (empty, blank or too short); unset is fine.

        Raises:
            MissingSecretError: the key is empty or shorter than ``MIN_SECRET_LENGTH``.
        """
        if self.secret is None:
            return
        if not self.secret.strip():
            raise MissingSecretError(f"{SECRET_ENV} is set but empty.", fix=_SECRET_FIX)
        if len(self.secret.strip()) < MIN_SECRET_LENGTH:
            raise MissingSecretError(
                f"{SECRET_ENV} is too short ({len(self.secret.strip())} characters; at least "
                f"{MIN_SECRET_LENGTH}): a short key lets anyone recompute the hashes of MRNs.",
                fix=_SECRET_FIX,
            )

    def pseudonymise(self, identifier: str) -> str:
        """Keyed hash (HMAC-SHA256, hex, 32 chars) of an identifier such as an MRN."""
        key = self.require_secret().encode()
        return hmac.new(key, identifier.strip().encode(), hashlib.sha256).hexdigest()[:32]
