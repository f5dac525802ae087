"""Private database servers for fault-injection tests: own data dir, free port, restartable.

The shared services (PostgreSQL 5432, MariaDB 3306) must never be stopped;
tests that kill or restart a server start one of these instead. Each lives
in a temporary directory owned by the database's service user (initdb and
mariadbd refuse to run as root), listens on a free local port and is
removed on exit. ``restart()`` stops and starts it on the same port and data,
returning once it accepts connections again.

Use the context managers directly, or the ``private_postgres`` /
``private_mariadb`` fixtures (module scope: one server per test module)::

    from spakky_outbox_testservices.private import private_postgres  # noqa: F401
"""

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def _pg_bin() -> Path:
    """The newest Debian/Ubuntu PostgreSQL binaries (``SPAKKY_OUTBOX_PG_BIN`` overrides)."""
    if override := os.environ.get("SPAKKY_OUTBOX_PG_BIN"):
        return Path(override)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    return found[-1] if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
"""Where initdb and pg_ctl live (``SPAKKY_OUTBOX_PG_BIN`` overrides)."""
START_TIMEOUT = 60.0
"""Seconds a private server may take to start (the machine is shared and slow)."""


def free_port() -> int:
    """A local TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _user_command(user: str, argv: list[str]) -> list[str]:
    """Run ``argv`` as ``user`` when we are root (the servers refuse root)."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", user, "--", *argv]


def _owned_tempdir(prefix: str, user: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {START_TIMEOUT} s")
        time.sleep(0.05)


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of our own (trust auth, database ``postgres``)."""

    directory: Path
    port: int
    user: str = "postgres"

    @property
    def data(self) -> Path:
        """The cluster's data directory."""
        return self.directory / "data"

    @property
    def url(self) -> str:
        """Plain ``postgresql://`` URL (set the driver with ``make_url(...).set``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> None:
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", str(int(START_TIMEOUT)), *args]
        subprocess.run(_user_command(self.user, argv), check=True, capture_output=True)

    def _options(self) -> str:
        return (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory} -c fsync=off"
        )

    def init(self) -> None:
        """Create the cluster."""
        argv = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        subprocess.run(_user_command(self.user, argv), check=True, capture_output=True)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = str(self.directory / "server.log")
        self._pg_ctl("-l", log, "-o", self._options(), "start")
        _wait_until(lambda: _accepts(self.port), f"PostgreSQL on port {self.port} accepting")

    def stop(self) -> None:
        """Stop the server at once (``-m fast``: sessions are terminated)."""
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        """Fast restart on the same port: every open connection is cut."""
        log = str(self.directory / "server.log")
        self._pg_ctl("-m", "fast", "-l", log, "-o", self._options(), "restart")
        _wait_until(lambda: _accepts(self.port), f"PostgreSQL on port {self.port} accepting")


@contextmanager
def running_private_postgres() -> Iterator[PrivatePostgres]:
    """Start a private PostgreSQL; stop it and delete its files on exit."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {PG_BIN}")
    server = PrivatePostgres(_owned_tempdir("spakky-pg-", "postgres"), free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # never started, or down
            server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@dataclass
class PrivateMariaDB:
    """A MariaDB server of our own (root without password, database ``test``)."""

    directory: Path
    port: int
    user: str = "mysql"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """Plain ``mysql://`` URL (set the driver with ``make_url(...).set``)."""
        return f"mysql://root@127.0.0.1:{self.port}/test"

    def init(self) -> None:
        """Create the data directory and the ``test`` database."""
        argv = [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={self.directory / 'data'}",
            f"--tmpdir={self.directory}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        subprocess.run(_user_command(self.user, argv), check=True, capture_output=True)
        init_sql = self.directory / "init.sql"
        init_sql.write_text(
            "CREATE DATABASE IF NOT EXISTS test;\n"
            "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n"
            "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n"
        )
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.user)
            os.chown(init_sql, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        """Start mariadbd and wait until it accepts connections."""
        argv = [
            "mariadbd",
            "--no-defaults",
            f"--datadir={self.directory / 'data'}",
            # Its own tmpdir: a starting mariadbd deletes every '#sql*' file in its
            # tmpdir, which with the default /tmp are the machine's server's live
            # temporary tables (its next DESCRIBE fails: "Error on delete of '/tmp/#sql-temptable-...'").
            f"--tmpdir={self.directory}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.directory / 'mysqld.sock'}",
            f"--pid-file={self.directory / 'mysqld.pid'}",
            f"--log-error={self.directory / 'server.log'}",
            f"--init-file={self.directory / 'init.sql'}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--skip-log-bin",
        ]
        self.process = subprocess.Popen(
            _user_command(self.user, argv),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until(self._ready, f"MariaDB on port {self.port} accepting")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.directory / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mariadbd exited with {self.process.returncode}: {log}")
        return _accepts(self.port)

    def stop(self) -> None:
        """Stop the server (SIGTERM, as a service manager does) and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start on the same port and data: every open connection is cut."""
        self.stop()
        self.start()


@contextmanager
def running_private_mariadb() -> Iterator[PrivateMariaDB]:
    """Start a private MariaDB; stop it and delete its files on exit."""
    if shutil.which("mariadbd") is None or shutil.which("mariadb-install-db") is None:
        pytest.skip("no mariadbd / mariadb-install-db on PATH")
    server = PrivateMariaDB(_owned_tempdir("spakky-mariadb-", "mysql"), free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL for this test module, free to restart or stop."""
    with running_private_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def private_mariadb() -> Iterator[PrivateMariaDB]:
    """A private MariaDB for this test module, free to restart or stop."""
    with running_private_mariadb() as server:
        yield server
