"""A throwaway nginx on loopback in front of several FaceCore instances: round-robin over them, as
docs/deploy.md's upstream does, for the tests and benches of several instances over one store.

`Balancer.find()` says why nginx cannot be had (not installed; .ci/run installs Debian's), or
None. `Balancer.start(ports)` writes a configuration into a temporary directory and runs nginx
in the foreground on a free port; `url` is where clients go; `stop()` ends it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.server.live_server import free_port

CONF = """\
{user}worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream facecore {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 20m;
        proxy_read_timeout 300s;
        location / {{
            proxy_pass http://facecore;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


class Balancer:
    def __init__(self, proc: subprocess.Popen[bytes], root: Path, port: int) -> None:
        self.proc, self.root, self.port = proc, root, port

    @staticmethod
    def find() -> str | None:
        if shutil.which("nginx") is None:
            return "nginx is not installed (Debian: apt-get install nginx)"
        return None

    @classmethod
    def start(cls, ports: Sequence[int], timeout: float = 30) -> Balancer:
        root = Path(tempfile.mkdtemp(prefix="facecore-nginx-"))
        port = free_port()
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in ports)
        conf = root / "nginx.conf"
        # As root, nginx's workers would run as nobody, who cannot write in our temporary
        # directory (large request bodies are buffered there): they run as we do.
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf.write_text(CONF.format(user=user, root=root, port=port, servers=servers))
        nginx = shutil.which("nginx")
        assert nginx is not None
        with (root / "stderr.log").open("wb") as err:
            proc = subprocess.Popen(
                [nginx, "-p", str(root), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=err
            )
        balancer = cls(proc, root, port)
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(balancer.url + "/health", timeout=5)
                return balancer
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    balancer.stop()
                    raise RuntimeError(
                        "nginx did not start: " + (root / "stderr.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
