"""A throwaway PostgreSQL cluster on loopback, for the tests and benches of the shared store:
`Cluster.start()` runs initdb and pg_ctl in a temporary directory on a free port (as the
`postgres` system user when we are root: PostgreSQL refuses to run as root; the user is created
when missing), `database()` makes an empty database and returns its URL, `kill()` SIGKILLs the
server (its WAL keeps every committed transaction), `restart()` starts it again on its port.

`Cluster.find()` says why PostgreSQL cannot be had here (no initdb, no way to become postgres),
or None; the `postgres` fixture (tests/conftest.py) skips with that reason. One cluster serves a
whole test session; each test takes its own database.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.server.live_server import free_port

USER = "facecore"  # the cluster's superuser (trust authentication on loopback)
_names = itertools.count()


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs else None


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie no longer does: its parent may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Cluster:
    def __init__(self, bin_dir: Path, root: Path, port: int, as_postgres: bool) -> None:
        self.bin, self.root, self.port, self.as_postgres = bin_dir, root, port, as_postgres
        self.data = root / "data"

    @staticmethod
    def find() -> str | None:
        """Why a cluster cannot be started here, or None when it can."""
        if _bin_dir() is None:
            return "PostgreSQL is not installed (no initdb; Debian: apt-get install postgresql)"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                made = subprocess.run(
                    ["useradd", "--system", "--home-dir", "/var/lib/postgresql", "postgres"],
                    capture_output=True,
                    check=False,
                )
                if made.returncode != 0:
                    return "running as root, and the postgres user could not be created"
            if shutil.which("runuser") is None:
                return "running as root without runuser to become postgres"
        return None

    @classmethod
    def start(cls, fsync: bool = False) -> Cluster:
        """A new cluster. fsync off by default: a killed server still keeps what it committed
        (the OS has it); only a power cut would lose it, and tests cut no power."""
        bin_dir = _bin_dir()
        assert bin_dir is not None
        root = Path(tempfile.mkdtemp(prefix="facecore-pg-"))
        as_postgres = os.geteuid() == 0
        if as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(root, entry.pw_uid, entry.pw_gid)
        cluster = cls(bin_dir, root, free_port(), as_postgres)
        cluster._run(
            "initdb", "-D", str(cluster.data), "-U", USER, "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        conf = cluster.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\nport = {cluster.port}\n"
                f"unix_socket_directories = '{root}'\nfsync = {'on' if fsync else 'off'}\n"
                "max_connections = 200\nshared_buffers = 128MB\n"
            )
        cluster.restart()
        return cluster

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=self.root)
        if check and out.returncode != 0:
            raise RuntimeError(f"{tool} failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")
        return out

    @property
    def admin_url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"{prefix}_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self) -> None:
        """Start the server (again), waiting until it accepts connections."""
        log = self.root / "server.log"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start")

    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, as a crash would, and wait until it is gone."""
        pid = self.pid()
        os.killpg(pid, signal.SIGKILL)  # pg_ctl starts it as a session leader, backends inside
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Its lock files name a PID that may linger as a zombie (a container's init that does
        # not reap), which the next start would take for a running server.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        for f in self.root.glob(f".s.PGSQL.{self.port}*"):
            f.unlink(missing_ok=True)

    def stop(self) -> None:
        """Gone for good: killed (nothing in it is kept) and its directory removed."""
        if (self.data / "postmaster.pid").exists():
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)
