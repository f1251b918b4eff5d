"""Supervisor sign-in for the dashboard, and the security headers of every response.

Sign-in is required when the dashboard is bound beyond loopback or a password is set
(``CALLSENSE_DASHBOARD_PASSWORD``); on loopback without one nobody signs in (the acknowledging
user is ``CALLSENSE_DASHBOARD_USER``). Signed in, every page and Dash callback rides on the
session cookie: user ``CALLSENSE_DASHBOARD_USER`` with the password, or any user name with the
token ``CALLSENSE_API_TOKEN`` as password (both supervisors), or a named user of
``CALLSENSE_DASHBOARD_USERS`` with their own password and role: supervisors acknowledge alerts,
analysts only read. One scheme per surface: pages take the session only,
the JSON API (/api) only its bearer token (checked there). After ``MAX_FAILURES`` wrong
passwords from one address within ``LOCKOUT_S``, sign-in answers 429 until the window passes.
"""

from __future__ import annotations

import hmac
import html
import re
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from flask import Flask, jsonify, redirect, request, session

if TYPE_CHECKING:
    from callsense.settings import Settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PUBLIC_PATHS = frozenset({"/login", "/logout"})
PUBLIC_PREFIXES = (
    "/api/",
    "/assets/",
    "/_dash-component-suites/",
    "/_favicon.ico",
)
_USER_RE = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
MAX_FAILURES = 5
LOCKOUT_S = 900.0
SECURITY_HEADERS = {
    # Dash renders inline bootstrap scripts and Plotly evaluates code, so scripts stay open to
    # 'self' plus inline/eval; framing, plugins, base and form targets are closed
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

LOGIN_HTML = """<!doctype html><html><head><title>callsense sign-in</title>
<style>body{{font-family:sans-serif;max-width:22em;margin:5em auto}}input{{display:block;
width:100%;margin:.4em 0 1em;padding:.4em}}.err{{color:#b00}}</style></head><body>
<h2>callsense supervisor sign-in</h2><p class="err">{error}</p>
<form method="post" action="/login?next={next}"><label>User<input name="user" id="user"
autocomplete="username"></label><label>Password or token<input name="password" id="password"
type="password" autocomplete="current-password"></label>
<button type="submit" id="signin">Sign in</button></form></body></html>"""


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def _eq(a: str, b: str | None) -> bool:
    return bool(b) and hmac.compare_digest(a.encode(), (b or "").encode())


def _safe_next(value: str | None) -> str:
    """A same-origin path to go to after sign-in, else "/". Browsers drop tabs and newlines
    and read a backslash as a slash, so any of those (or a second leading slash) is refused."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return "/"
    if "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


class SignInThrottle:
    """Failed sign-ins per client address within a sliding window (in memory, per process)."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_s: float = LOCKOUT_S) -> None:
        self.max_failures, self.window_s = max_failures, window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        q = self._failures.setdefault(client, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def locked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        now = time.monotonic()
        with self._lock:
            q = self._recent(client, now)
            return self.window_s - (now - q[0]) if len(q) >= self.max_failures else 0.0

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(client, now).append(now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def install_auth(server: Flask, settings: Settings, require_login: bool) -> None:
    user_name = settings.dashboard_user
    password = (
        settings.dashboard_password.get_secret_value() if settings.dashboard_password else None
    )
    token = settings.api_token.get_secret_value() if settings.api_token else None
    accounts = settings.accounts
    if require_login and not (password or token or accounts):
        raise ValueError(
            "the dashboard is bound beyond loopback: set CALLSENSE_DASHBOARD_PASSWORD "
            "(or CALLSENSE_API_TOKEN) so supervisors can sign in"
        )
    server.config["CALLSENSE_REQUIRE_LOGIN"] = require_login
    throttle = SignInThrottle()

    @server.after_request
    def _headers(response: Any) -> Any:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @server.before_request
    def _gate() -> Any:
        if not require_login or request.path in PUBLIC_PATHS:
            return None
        if request.path.startswith(PUBLIC_PREFIXES):
            return None
        if session.get("user"):
            return None
        if request.path.startswith("/_dash-") or request.path.startswith("/export/"):
            return jsonify({"error": "sign in required"}), 401
        return redirect("/login?next=" + quote(request.full_path.rstrip("?"), safe=""))

    @server.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        nxt = _safe_next(request.args.get("next"))
        error = ""
        if request.method == "POST":
            client = request.remote_addr or "?"
            wait_s = throttle.locked_for(client)
            if wait_s > 0:
                msg = f"too many failed sign-ins: try again in {int(wait_s // 60) + 1} min"
                body = LOGIN_HTML.format(error=html.escape(msg), next=quote(nxt, safe=""))
                return body, 429, {"Retry-After": str(int(wait_s) + 1)}
            user = request.form.get("user", "")
            pw = request.form.get("password", "")
            role = _check_password(user, pw, user_name, password, token, accounts)
            if _USER_RE.match(user) and role:
                throttle.succeeded(client)
                session.clear()
                session["user"] = user
                session["role"] = role
                return redirect(nxt)
            throttle.failed(client)
            error = "wrong user or password"
        return LOGIN_HTML.format(error=html.escape(error), next=quote(nxt, safe=""))

    @server.route("/logout")
    def logout() -> Any:
        session.clear()
        return redirect("/login")


def _check_password(
    user: str,
    pw: str,
    user_name: str,
    password: str | None,
    token: str | None,
    accounts: dict[str, tuple[str, str]],
) -> str | None:
    """The role ``user`` signs in with, or None for a wrong password. A named account is
    checked against its own hash only."""
    from werkzeug.security import check_password_hash

    if user in accounts:
        role, hashed = accounts[user]
        try:
            return role if check_password_hash(hashed, pw) else None
        except ValueError:  # not a hash werkzeug knows
            return None
    if user == user_name and password is not None and _eq(pw, password):
        return "supervisor"
    if token is not None and _eq(pw, token):
        return "supervisor"
    return None


def current_role(settings: Settings) -> str:
    """The acting user's role: the signed-in role, else supervisor (nobody signs in on
    loopback without a password)."""
    try:
        return session.get("role") or "supervisor"
    except RuntimeError:  # outside a request
        return "supervisor"


def can_act(settings: Settings) -> bool:
    """Whether the acting user may change things (acknowledge, save rules): supervisors."""
    return current_role(settings) == "supervisor"


def current_user(settings: Settings) -> str:
    """Who is acting (acknowledging): the signed-in user, else the configured user name."""
    try:
        return session.get("user") or settings.dashboard_user
    except RuntimeError:  # outside a request
        return settings.dashboard_user
