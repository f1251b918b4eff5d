"""Settings read from the environment: named dashboard users."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from callsense.settings import Settings, parse_users


def test_named_users_parse_with_their_roles(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed = "scrypt:32768:8:1$salt$abc"  # the hash itself holds ':' and '$'
    users = f"ana:analyst:{hashed}, sam:supervisor:{hashed}"
    monkeypatch.setenv("CALLSENSE_DASHBOARD_USERS", users)
    assert Settings().accounts == {"ana": ("analyst", hashed), "sam": ("supervisor", hashed)}
    assert "scrypt" not in repr(Settings())  # a secret: never printed


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("ana:analyst", "expected name:role:hash"),
        ("ana:boss:h", "role must be one of"),
        ("a b:analyst:h", "bad user name"),
        ("ana:analyst:h,ana:supervisor:h", "listed twice"),
    ],
)
def test_malformed_users_are_refused_clearly(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_users(text)
    with pytest.raises(ValidationError, match=error):
        Settings(dashboard_users=text)
