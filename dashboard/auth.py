"""Supervisor sign-in for the dashboard when it is bound beyond loopback.

On 127.0.0.1/localhost/::1 nobody signs in (the acknowledging user is
``CALLSENSE_DASHBOARD_USER``). Bound anywhere else, every page and Dash callback needs a
signed-in session: user ``CALLSENSE_DASHBOARD_USER`` with ``CALLSENSE_DASHBOARD_PASSWORD``, or
any user name with the token ``CALLSENSE_API_TOKEN`` as password; a request carrying
``Authorization: Bearer $CALLSENSE_API_TOKEN`` passes too. The JSON API (/api) always checks its
bearer token itself.
"""

from __future__ import annotations

import hmac
import html
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from flask import Flask, jsonify, redirect, request, session

if TYPE_CHECKING:
    from callsense.settings import Settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PUBLIC_PREFIXES = (
    "/login",
    "/logout",
    "/api/",
    "/assets/",
    "/_dash-component-suites/",
    "/_favicon.ico",
)
_USER_RE = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")

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
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def install_auth(server: Flask, settings: Settings, require_login: bool) -> None:
    user_name = settings.dashboard_user
    password = (
        settings.dashboard_password.get_secret_value() if settings.dashboard_password else None
    )
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if require_login and not (password or token):
        raise ValueError(
            "the dashboard is bound beyond loopback: set CALLSENSE_DASHBOARD_PASSWORD "
            "(or CALLSENSE_API_TOKEN) so supervisors can sign in"
        )
    server.config["CALLSENSE_REQUIRE_LOGIN"] = require_login

    @server.before_request
    def _gate() -> Any:
        if not require_login or request.path.startswith(PUBLIC_PREFIXES):
            return None
        if session.get("user"):
            return None
        bearer = request.headers.get("Authorization", "").partition(" ")[2].strip()
        if token and bearer and _eq(bearer, token):
            return None
        if request.path.startswith("/_dash-") or request.path.startswith("/export/"):
            return jsonify({"error": "sign in required"}), 401
        return redirect("/login?next=" + quote(request.full_path.rstrip("?"), safe=""))

    @server.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        nxt = _safe_next(request.args.get("next"))
        error = ""
        if request.method == "POST":
            user = request.form.get("user", "")
            pw = request.form.get("password", "")
            ok_pw = user == user_name and password is not None and _eq(pw, password)
            ok_token = token is not None and _eq(pw, token)
            if _USER_RE.match(user) and (ok_pw or ok_token):
                session.clear()
                session["user"] = user
                return redirect(nxt)
            error = "wrong user or password"
        return LOGIN_HTML.format(error=html.escape(error), next=quote(nxt, safe=""))

    @server.route("/logout")
    def logout() -> Any:
        session.clear()
        return redirect("/login")


def current_user(settings: Settings) -> str:
    """Who is acting (acknowledging): the signed-in user, else the configured user name."""
    try:
        return session.get("user") or settings.dashboard_user
    except RuntimeError:  # outside a request
        return settings.dashboard_user
