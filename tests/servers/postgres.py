"""A private PostgreSQL on 127.0.0.1 (trust auth, fsync off) in a temp dir.

with PostgresServer() as pg:
    engine = create_engine(pg.url)                 # database "mailsvc"
    other = pg.create_database()                   # a fresh database, its URL
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Literal

import psycopg
from psycopg import sql

from tests.servers.procs import (
    Server,
    ServerError,
    free_port,
    run,
    spawn,
    stop,
    unprivileged_user,
    wait_until,
)

DB_USER = "postgres"  # the superuser created by initdb, whatever the OS user
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def pg_bindir() -> Path:
    """$MAILSVC_PG_BIN, else the directory of ``postgres`` on PATH, else the newest Debian one."""
    if env := os.environ.get("MAILSVC_PG_BIN"):
        return Path(env)
    if found := shutil.which("postgres"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not candidates:
        raise ServerError("PostgreSQL server binaries not found (set MAILSVC_PG_BIN)")
    return Path(candidates[-1])


class PostgresServer(Server):
    """PostgreSQL listening on 127.0.0.1:``port`` only; unix socket in the data dir.

    As root the server runs as the ``postgres`` system user (or ``nobody``). stop()/start()
    keep the data and the port (outage tests); close() deletes everything.
    """

    host = "127.0.0.1"

    def __init__(self, database: str = "mailsvc", *, start_timeout: float = 60.0) -> None:
        self.database = database
        self.start_timeout = start_timeout
        self.os_user = unprivileged_user()
        self.dir = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.port = free_port()
        self.bindir = pg_bindir()
        self._proc: subprocess.Popen[bytes] | None = None
        if self.os_user is not None:
            pw = pwd.getpwnam(self.os_user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the main database."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{DB_USER}@{self.host}:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={DB_USER} dbname={database}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self._proc is not None:
            return
        t0 = time.monotonic()
        fresh = not (self.data_dir / "PG_VERSION").exists()
        if fresh:
            run(
                [
                    self.bindir / "initdb",
                    "-D",
                    self.data_dir,
                    "-U",
                    DB_USER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                what="initdb",
                user=self.os_user,
            )
        argv: list[str | Path] = [
            self.bindir / "postgres",
            "-D",
            self.data_dir,
            "-p",
            str(self.port),
            "-c",
            f"listen_addresses={self.host}",
            "-c",
            f"unix_socket_directories={self.data_dir}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ]
        self._proc = spawn(argv, log_path=self.log_path, cwd=self.dir, user=self.os_user)
        try:
            wait_until(
                self._ready,
                what=f"PostgreSQL on {self.host}:{self.port}",
                timeout=self.start_timeout,
                proc=self._proc,
                log_path=self.log_path,
            )
            if fresh:
                self.create_database(self.database)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        print(
            f"[servers] PostgreSQL ready on {self.host}:{self.port} in {self.startup_seconds:.1f} s",
            file=sys.stderr,
        )

    def _ready(self) -> bool:
        with psycopg.connect(self.conninfo(), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Shut down: "fast" disconnects clients cleanly, "immediate" is crash-like."""
        proc, self._proc = self._proc, None
        stop(proc, sig=STOP_SIGNALS[mode], timeout=30)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self, name: str | None = None) -> str:
        """Create a database (default: a unique ``t_<hex>`` name); return its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its clients."""
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
