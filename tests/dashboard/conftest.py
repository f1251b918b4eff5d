"""Dashboard fixtures: a seeded database and the real dashboard served over HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from support.dash import API_TOKEN, PASSWORD, seed  # noqa: E402


@dataclass
class Served:
    url: str
    app: Any
    sf: Any
    settings: Any


def serve(app: Any) -> tuple[str, Any]:
    import logging

    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no per-request lines

    srv = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_port}", srv


@pytest.fixture
def dashboard_factory(database_url: str) -> Iterator[Any]:
    """Call with settings overrides; returns a :class:`Served` dashboard on a free port."""
    from callsense.dashboard.app import create_app

    from callsense.settings import Settings
    from callsense.storage.db import make_engine, session_factory

    engine = make_engine(database_url)
    sf = session_factory(engine)
    servers = []

    def make(require_login: bool = False, seed_data: bool = True, **overrides: Any) -> Served:
        values = {
            "database_url": database_url,
            "api_token": API_TOKEN,
            "dashboard_password": PASSWORD,
            "webhook_url": "",
            **overrides,
        }
        settings = Settings(**values)
        if seed_data:
            seed(sf)
        app = create_app(settings, require_login=require_login, sf=sf)
        url, srv = serve(app)
        servers.append(srv)
        return Served(url, app, sf, settings)

    yield make
    for srv in servers:
        srv.shutdown()
    engine.dispose()
