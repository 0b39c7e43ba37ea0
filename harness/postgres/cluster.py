"""PostgreSQL clusters of a run's own: created in the run folder, started, crashed, removed.

Theory of operation. A :class:`PgCluster` is one data directory made by
``initdb`` under the run folder, served by one postmaster that listens on a
loopback port of its own (and a unix socket in the data directory, nowhere
else). ``pg_ctl start -w`` returns once the server accepts connections, so
readiness is PostgreSQL's own signal, never a sleep. Every cluster the run
creates it stops and removes by its own data directory; nothing here touches
a cluster it did not make.

``initdb`` refuses to run as root. As root, the commands run as the
unprivileged system user PG_USER, created when absent (``useradd --system``),
and the cluster directories are given to it; the run folder's parents must
then be searchable by that user (a run folder under a mode-700 directory is
refused with a message saying so). As anyone else, they run as the current
user.

The settings that matter to 2PC: ``max_prepared_transactions`` at least the
clients (each holds at most one prepared transaction per cluster, plus those
abandoned by killed clients), ``fsync`` and ``synchronous_commit`` on (a
PREPARE or COMMIT acknowledged is on disk: the resolver and the checker rely
on it after a kill -9).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.node.address import listen_socket

PG_USER = "harness-pg"  # the unprivileged user clusters run as when the harness runs as root
PG_BIN_ENV = "HARNESS_PG_BIN"  # a directory holding initdb and pg_ctl, to use instead of Debian's
DATABASE = "postgres"  # the database the harness uses in each cluster
SUPERUSER = "postgres"  # the cluster's bootstrap superuser (initdb -U)
START_TIMEOUT = 60  # seconds pg_ctl waits for a start (crash recovery included)


class PgError(Exception):
    """A cluster could not be created, started or stopped (the message says why)."""


def find_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: $HARNESS_PG_BIN, else the newest
    Debian install (/usr/lib/postgresql/<version>/bin, not on PATH), else PATH."""
    if env := os.environ.get(PG_BIN_ENV):
        return Path(env) if (Path(env) / "initdb").exists() else None
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", Path(p).parent.parent.name)],
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def unavailable() -> str | None:
    """Why clusters cannot be made here (a reason for a skip or an error), or None."""
    if find_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql, or set HARNESS_PG_BIN)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install '.[postgres]')"
    return None


@dataclass(frozen=True)
class RunAs:
    """Who runs the PostgreSQL commands: a uid and gid, or None for ourselves."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_this_process(cls) -> RunAs:
        if os.geteuid() != 0:
            return cls()
        try:
            entry = pwd.getpwnam(PG_USER)
        except KeyError:
            _create_user()
            entry = pwd.getpwnam(PG_USER)
        return cls(entry.pw_uid, entry.pw_gid)

    def give(self, path: Path) -> None:
        """Make ``path`` (a directory we created) belong to the user."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            user=self.uid,
            group=self.gid,
            extra_groups=[] if self.uid is not None else None,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )


def _create_user() -> None:
    """Create PG_USER as a system user without a home or a login shell."""
    nologin = "/usr/sbin/nologin" if os.path.exists("/usr/sbin/nologin") else "/bin/false"
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", nologin, PG_USER],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        with contextlib.suppress(KeyError):
            pwd.getpwnam(PG_USER)  # another run created it meanwhile
            return
        raise PgError(f"cannot create the user {PG_USER} that PostgreSQL runs as: {done.stderr.strip()}")


def _free_port(host: str) -> int:
    """A free loopback port below the ephemeral range (harness.node.address):
    a postmaster restarted after a kill -9 finds it free again."""
    with listen_socket(host, 0) as s:
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    """One cluster: its data directory, port, and postmaster."""

    name: str  # pg1, pg2, ...: its node name in logs and final states
    data: Path
    log: Path  # the server's own log (pg_ctl -l)
    run_as: RunAs
    host: str = "127.0.0.1"
    port: int = 0
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def conninfo(self, port: int | None = None, **extra: str) -> str:
        """A libpq connection string for this cluster, through ``port`` if given (a relay)."""
        parts = {
            "host": self.host,
            "port": str(port or self.port),
            "dbname": DATABASE,
            "user": SUPERUSER,
            "connect_timeout": "5",
            **extra,
        }
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def create(self, max_prepared: int, max_connections: int) -> None:
        """initdb, then the settings the harness needs."""
        pg_bin = find_bin()
        if pg_bin is None:
            raise PgError(unavailable() or "PostgreSQL not found")
        self.data.mkdir(parents=True)
        self.data.chmod(0o700)
        self.run_as.give(self.data)
        if self.run_as.uid is not None:
            _check_reachable(self.data, self.run_as)
        # --no-sync: initdb's own files need not be flushed (a machine crash
        # during a run loses the run anyway); the server's fsync is on.
        done = self.run_as.run(
            [
                str(pg_bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ]
        )
        if done.returncode != 0:
            raise PgError(f"initdb for {self.name} failed: {done.stderr.strip() or done.stdout.strip()}")
        self.port = _free_port(self.host)
        self.settings = {
            "listen_addresses": f"'{self.host}'",  # loopback only
            "port": str(self.port),
            "unix_socket_directories": f"'{self.data}'",
            "max_prepared_transactions": str(max_prepared),
            "max_connections": str(max_connections),
            "fsync": "on",
            "synchronous_commit": "on",
            "shared_buffers": "16MB",  # many small clusters on a shared machine
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] %a '",
        }
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as f:
            f.write("\n# written by harness.postgres.cluster\n")
            f.writelines(f"{k} = {v}\n" for k, v in self.settings.items())
        self.log.touch()
        self.run_as.give(self.log)

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        pg_bin = find_bin()
        assert pg_bin is not None
        return self.run_as.run([str(pg_bin / "pg_ctl"), "-D", str(self.data), *args])

    def start(self, patience: float = START_TIMEOUT) -> None:
        """Start the postmaster and return once it accepts connections. After a
        kill -9 the old backends may still hold the shared memory for a moment
        (they exit once they notice their postmaster died): try again until
        ``patience`` runs out."""
        deadline = time.monotonic() + patience
        while True:
            done = self._pg_ctl("-l", str(self.log), "-w", "-t", str(START_TIMEOUT), "start")
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PgError(
                    f"{self.name} did not start: {done.stderr.strip() or done.stdout.strip()}; see {self.log}"
                )
            time.sleep(0.1)  # the old backends are exiting: polling the system, not guessing

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill9(self) -> int | None:
        """SIGKILL the postmaster (its backends notice and exit); returns its pid."""
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pid

    def running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, mode: str = "fast") -> None:
        """Shut it down (SIGKILL if it does not stop); no error if not running."""
        if not self.data.exists() or not self.running():
            return
        done = self._pg_ctl("-m", mode, "-w", "-t", "30", "stop")
        if done.returncode != 0:
            self.kill9()

    def remove(self) -> None:
        """Stop it and delete its data directory (its server log stays in the run folder).
        An immediate shutdown: nothing in it is needed any more."""
        self.stop("immediate")
        if self.data.exists():
            shutil.rmtree(self.data, ignore_errors=True)
        with contextlib.suppress(OSError):  # the clusters' parent, once the last one is gone
            self.data.parent.rmdir()


def _check_reachable(path: Path, run_as: RunAs) -> None:
    """PG_USER must be able to reach ``path``: every parent searchable."""
    done = run_as.run(["test", "-w", str(path)])
    if done.returncode != 0:
        raise PgError(
            f"the user {PG_USER} cannot reach {path}: every directory above it must be searchable "
            "by others (chmod o+x), or choose --out elsewhere"
        )


def make_clusters(folder: Path, count: int, max_prepared: int, max_connections: int) -> list[PgCluster]:
    """Create and start ``count`` clusters under ``folder``/pg. On failure,
    the ones made so far are removed before the error is raised."""
    run_as = RunAs.for_this_process()
    folder = folder.resolve()  # the server runs in its data directory: a relative path would not resolve there
    base = folder / "pg"
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    clusters: list[PgCluster] = []
    try:
        for i in range(1, count + 1):
            c = PgCluster(name=f"pg{i}", data=base / f"pg{i}", log=folder / f"pg{i}.server.log", run_as=run_as)
            clusters.append(c)
            c.create(max_prepared, max_connections)
            c.start(patience=0.0)  # a new cluster has no old backends to wait for: a failure is final
    except BaseException:
        for c in clusters:
            c.remove()
        raise
    return clusters
