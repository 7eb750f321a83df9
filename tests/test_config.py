"""Settings: timezone, the pseudonymisation key and its error message."""

from __future__ import annotations

import pytest

from cart_etl.config import SECRET_ENV, Settings
from cart_etl.errors import ConfigurationError, MissingSecretError


def test_01_default_timezone_is_shanghai():
    assert Settings(secret=None).tz.key == "Asia/Shanghai"


def test_02_bad_timezone_names_the_fix():
    with pytest.raises(ConfigurationError, match="IANA"):
        _ = Settings(site_timezone="China/Tianjin").tz


def test_03_missing_secret_is_a_clear_configuration_error(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    settings = Settings()
    with pytest.raises(MissingSecretError) as info:
        settings.pseudonymise("2021004817")
    assert SECRET_ENV in str(info.value) and "export" in str(info.value)
    assert info.value.exit_code == 2


def test_04_pseudonymise_is_keyed_stable_and_strips(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "k1-0123456789abcdef")
    a = Settings().pseudonymise("2021004817")
    assert a == Settings().pseudonymise(" 2021004817 ")
    assert len(a) == 32 and "2021004817" not in a
    monkeypatch.setenv(SECRET_ENV, "k2-0123456789abcdef")
    assert Settings().pseudonymise("2021004817") != a


@pytest.mark.parametrize(
    ("value", "why"), [("", "empty"), ("   ", "empty"), ("short-key", "too short")]
)
def test_05_empty_or_short_secret_is_refused_with_the_fix(monkeypatch, value, why):
    monkeypatch.setenv(SECRET_ENV, value)
    settings = Settings()
    for check in (settings.require_secret, settings.check_secret):
        with pytest.raises(MissingSecretError, match=why) as info:
            check()
        assert "export" in str(info.value) and "16" in str(info.value)


def test_06_unset_secret_passes_the_check_but_not_require(monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    Settings().check_secret()  # runs that hash nothing do not need the key
    with pytest.raises(MissingSecretError, match="not set"):
        Settings().require_secret()
    assert Settings(secret="x" * 16).require_secret() == "x" * 16
