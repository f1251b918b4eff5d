"""A PostgreSQL cluster of a test's own, from Debian's server binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from callsense.broker import free_port


class ThrowAwayPostgres:
    """A PostgreSQL cluster of the test session's own: initdb in a temporary directory, a free
    port on 127.0.0.1, trust authentication, no fsync; ``stop()`` stops it and removes it.

    ``durable=False`` (the default, for speed) also turns ``synchronous_commit`` off: a
    commit is acknowledged before its WAL is written, so :meth:`down` (a crash) can lose the
    last ~0.6 s of acknowledged commits. Tests that crash the server want ``durable=True``.

    Debian installs the server binaries under /usr/lib/postgresql/<major>/bin (``make test``
    installs the package when they are missing). initdb refuses to run as root, so as root the
    cluster belongs to the ``postgres`` user that the package creates.
    """

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        self.bin = self._bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix="callsense-pg-"))
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            import pwd

            try:
                entry = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError(
                    "running as root needs the 'postgres' user of Debian's "
                    "postgresql package to own the test cluster"
                ) from exc
            self.user = entry.pw_name
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    @staticmethod
    def _bin_dir() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                       key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                       else 0)  # fmt: skip
        if found:
            return found[-1].parent
        initdb = shutil.which("initdb")
        if initdb:
            return Path(initdb).resolve().parent
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found: install "
                           "Debian's 'postgresql' package (make test does)")  # fmt: skip

    def _run(self, *args: str) -> None:
        done = subprocess.run([str(self.bin / args[0]), *args[1:]], user=self.user,
                              capture_output=True, text=True, cwd=self.dir)  # fmt: skip
        if done.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{tail}")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/test"

    def start(self) -> ThrowAwayPostgres:
        data = self.dir / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        self.up()
        import sqlalchemy as sa

        admin = sa.create_engine(self.url.rsplit("/", 1)[0] + "/postgres",
                                 isolation_level="AUTOCOMMIT")  # fmt: skip
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE test"))
        admin.dispose()
        return self

    def up(self) -> None:
        """Start the server on the cluster's data (again, after :meth:`down`)."""
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
            "-c full_page_writes=off -c max_connections=200"
        )  # fsync off: a server crash is a process crash here, the OS keeps what was written
        if not self.durable:
            options += " -c synchronous_commit=off"
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-l",
                  str(self.dir / "server.log"), "-w", "-t", "60", "start")  # fmt: skip

    def down(self) -> None:
        """Stop the server as a crash would (immediate: connections cut), keeping its data."""
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        try:
            self.down()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
