"""A throwaway PostgreSQL cluster for the session, from the installed binaries (initdb, pg_ctl).

The cluster listens on a unix socket in a private temporary directory only (no TCP), trusts
local connections, and is stopped and deleted at the end of the session. As root, it runs as
the `postgres` user (or `nobody`): PostgreSQL refuses to run as root. Each test gets a database
of its own (`postgres_database_url`).

Environment:
    CHURNWATCH_TEST_POSTGRES_URL  a server to use instead (its user needs CREATEDB)
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from glob import glob
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from churnwatch.broker import free_port

DEBIAN_GLOB = "/usr/lib/postgresql/*/bin"
TOOLS = ("initdb", "pg_ctl", "postgres")


def postgres_bindir() -> Path | None:
    """The first directory with initdb, pg_ctl and postgres: PATH, then Debian's, newest first."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    found = glob(DEBIAN_GLOB)
    found.sort(key=lambda d: [int(n) for n in re.findall(r"\d+", d)], reverse=True)
    candidates += [Path(d) for d in found]
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in TOOLS):
            return bindir
    return None


def _run_as() -> tuple[list[str], pwd.struct_passwd | None]:
    """A command prefix and the account to run PostgreSQL as (root is refused by it)."""
    if os.geteuid() != 0:
        return [], None
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root and no runuser to start PostgreSQL as another user")
    for name in ("postgres", "nobody"):
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue
        return [runuser, "-u", name, "--"], account
    pytest.skip("running as root and neither a postgres nor a nobody user exists")


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server for the session (skips when none can be started)."""
    external = os.environ.get("CHURNWATCH_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    bindir = postgres_bindir()
    if bindir is None:
        pytest.skip(
            f"no PostgreSQL binaries ({', '.join(TOOLS)}) on PATH or in {DEBIAN_GLOB} "
            "(apt-get install postgresql)"
        )
    prefix, account = _run_as()
    # Not under pytest's tmp_path: that is private to root, and a socket path must be short.
    base = Path(tempfile.mkdtemp(prefix="churnwatch-pg-"))
    data, log = base / "data", base / "server.log"
    if account is not None:
        os.chown(base, account.pw_uid, account.pw_gid)
    port = free_port()
    try:
        initdb = [
            str(bindir / "initdb"),
            *("-D", str(data), "-U", "churnwatch", "--auth=trust"),
            *("--encoding=UTF8", "--no-locale", "--no-sync"),
        ]
        done = _run([*prefix, *initdb], base)
        if done.returncode != 0:
            pytest.skip(f"initdb failed: {done.stderr.strip()[-500:]}")
        options = f"-k {base} -p {port} -c listen_addresses='' -c fsync=off"
        start = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w"]
        done = _run([*prefix, *start, "start"], base)
        if done.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            pytest.skip(f"PostgreSQL did not start: {(done.stderr + server_log).strip()[-500:]}")
        try:
            yield f"postgresql+psycopg://churnwatch@/postgres?host={base}&port={port}"
        finally:
            _run([*prefix, *start[:3], "-m", "immediate", "-w", "stop"], base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_database_url(postgres_url: str) -> Iterator[str]:
    """URL of a new, empty database on the session's server; dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
