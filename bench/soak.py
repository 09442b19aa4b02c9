"""The soak: bounded mixed load on a live server for a long time, sampled every 10 s.

``clients`` closed-loop asyncio clients on loopback, each drawing its next operation by weight:
identify, detect, add, user delete, face delete, image liveness, match, lists, and (one client,
once a minute) an H5 session code and its video. The library stays bounded: a pool of LFW people
is enrolled and deleted again, never more than ``max_enrolled`` at once, and an operation on a
person waits until the last one on that person has answered, so the client knows what the
library holds and checks identify answers against it.

Every ``interval`` seconds the server process is sampled (resident memory, open files, threads)
and the window's answers summarised (count, codes, p50/p99 latency by route). The verdict compares
the end of the run with the state after warm-up: bounded growth of memory, files and threads, no
222302, no transport failure. Nothing here asserts a timing.

Standalone (from the repository root, a server started for you with the liveness models)::

    .venv/bin/python bench/soak.py --seconds 1800 --out /tmp/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]  # standalone: the imports bench/conftest.py allows
import _load

from tests.server.live_server import start_server

SHARED = ROOT.parent / "shared" / "data"
LFW = SHARED / "lfw" / "images"
VIDEO = SHARED / "video" / "WDA_AlexandriaOcasioCortez_000.mp4"
GROUPS = ("soak_g0", "soak_g1", "soak_g2", "soak_g3")
WEIGHTS = {
    "identify": 30,
    "detect": 15,
    "add": 15,
    "user_delete": 6,
    "face_delete": 4,
    "liveness": 10,
    "match": 8,
    "lists": 12,
}
# What "no growth" means, after the warm-up window (docs in bench/README.md, Soak).
RSS_GROWTH_BOUND = 96 * 2**20  # bytes: end-of-run median over the warm-up median
FD_GROWTH_BOUND = 16
THREAD_GROWTH_BOUND = 8


def liveness_models(out: Path) -> Path:
    """The default models plus the user-supplied MiniFASNet pair (make models LIVENESS_MODEL_DIR)."""
    from facecore.convert import minifasnet

    base = ROOT / "models" / "onnx"
    for f in base.iterdir():
        if f.is_file() and f.name != "manifest.json":
            (out / f.name).symlink_to(f)
    manifest = json.loads((base / "manifest.json").read_text())
    manifest["models"].update(minifasnet.build(SHARED / "models" / "minifasnet", out))
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def people(n: int) -> list[tuple[str, str, str]]:
    """(name, base64 of photo 1, base64 of photo 2) of `n` LFW people with two photos or more."""
    out = []
    for d in sorted(LFW.iterdir()):
        photos = sorted(d.glob("*.jpg"))
        if len(photos) >= 2:
            b = [base64.b64encode(p.read_bytes()).decode() for p in photos[:2]]
            out.append((d.name.replace("-", "_"), b[0], b[1]))  # user ids: [A-Za-z0-9_]
            if len(out) == n:
                break
    return out


def proc_sample(pid: int) -> dict[str, int]:
    status = _load.process_status(pid)
    return {
        "rss": status["VmRSS"],
        "threads": status["Threads"],
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


@dataclass
class Soak:
    host: str
    port: int
    pid: int
    seconds: float
    clients: int = 4
    interval: float = 10.0
    max_enrolled: int = 40
    seed: int = 7
    answers: list[tuple[float, str, float, int]] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.pool = people(3 * self.max_enrolled)
        self.enrolled: dict[str, tuple[str, str]] = {}  # name -> (group, face_token)
        self.busy: set[str] = set()
        self.video = VIDEO.read_bytes()

    # ------------------------------------------------------------------ requests

    async def call(
        self, conn: list[Any], route: str, path: str, body: Any, headers: str = ""
    ) -> dict[str, Any] | None:
        """One request on this client's connection; the envelope, or None on a transport
        failure (counted; the client reconnects)."""
        raw = _load.prepare(self.host, self.port, path, body).raw
        if headers:
            raw = raw.replace(b"\r\n\r\n", b"\r\n" + headers.encode() + b"\r\n\r\n", 1)
        t0 = time.perf_counter()
        try:
            if conn[0] is None:
                conn[0] = await asyncio.open_connection(self.host, self.port, limit=1 << 22)
            status, payload, close = await asyncio.wait_for(
                _load.exchange(conn[0][0], conn[0][1], raw), 120
            )
            env: dict[str, Any] = orjson.loads(payload)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, _load.TransportError) as e:
            self.failures[f"{route}: {type(e).__name__}"] += 1
            await self.hang_up(conn)
            return None
        except orjson.JSONDecodeError:
            self.failures[f"{route}: http {status}, not an envelope"] += 1
            return None
        if close:
            await self.hang_up(conn)
        if "err_no" in env:  # the H5 route's own envelope
            env["error_code"] = env["err_no"]
        self.answers.append((time.monotonic(), route, time.perf_counter() - t0, env["error_code"]))
        return env

    async def hang_up(self, conn: list[Any]) -> None:
        if conn[0] is not None:
            conn[0][1].close()
            conn[0] = None

    def v3(self, op: str) -> str:
        return f"/face-api/v3/{op}?appid=soak"

    def check(self, name: str, ok: bool) -> None:
        self.checks[f"{name}: {'ok' if ok else 'wrong'}"] += 1

    # ------------------------------------------------------------------ operations

    def free_person(self, enrolled: bool) -> tuple[str, str, str] | None:
        choices = [
            p for p in self.pool if (p[0] in self.enrolled) == enrolled and p[0] not in self.busy
        ]
        return self.rng.choice(choices) if choices else None

    async def operation(self, conn: list[Any], kind: str) -> None:
        if kind == "add" and len(self.enrolled) >= self.max_enrolled:
            kind = "user_delete"
        if kind in ("user_delete", "face_delete") and not self.enrolled:
            kind = "add"
        if kind in ("add", "user_delete", "face_delete"):
            person = self.free_person(enrolled=kind != "add")
            if person is None:
                return
            name = person[0]
            self.busy.add(name)
            try:
                await self.change(conn, kind, person)
            finally:
                self.busy.discard(name)
            return
        name, photo1, photo2 = self.rng.choice(self.pool)
        image = {"image": photo2, "image_type": "BASE64"}
        if kind == "identify":
            if name in self.busy:
                return
            known = name in self.enrolled
            self.busy.add(name)  # not deleted or added while its answer is checked
            try:
                body = {**image, "group_id_list": ",".join(GROUPS)}
                env = await self.call(conn, kind, self.v3("face/identify"), body)
            finally:
                self.busy.discard(name)
            if env is not None and known:
                users = (env["result"] or {}).get("user_list") or [{}]
                self.check("identify finds the enrolled person", users[0].get("user_id") == name)
        elif kind == "detect":
            body = {**image, "face_field": "age,gender,quality,landmark,eye_status"}
            env = await self.call(conn, kind, self.v3("face/detect"), body)
            if env is not None:
                self.check("detect finds one face", env["error_code"] == 0)
        elif kind == "liveness":
            await self.call(conn, kind, self.v3("face/liveness"), [image])
        elif kind == "match":
            pair = [{"image": photo1, "image_type": "BASE64"}, image]
            env = await self.call(conn, kind, self.v3("face/match"), pair)
            if env is not None and env["error_code"] == 0:
                self.check("match of one person scores over 60", env["result"]["score"] > 60)
        elif kind == "lists":
            await self.call(conn, "group/list", self.v3("group/list"), {})
            group = self.rng.choice(GROUPS)
            await self.call(conn, "user/list", self.v3("user/list"), {"group_id": group})

    async def change(self, conn: list[Any], kind: str, person: tuple[str, str, str]) -> None:
        name, photo1, _ = person
        if kind == "add":
            group = self.rng.choice(GROUPS)
            body = {"image": photo1, "image_type": "BASE64", "group_id": group, "user_id": name}
            env = await self.call(conn, kind, self.v3("face/add"), body)
            if env is not None and env["error_code"] == 0:
                self.enrolled[name] = (group, env["result"]["face_token"])
            return
        group, token = self.enrolled[name]
        if kind == "user_delete":
            body = {"group_id": group, "user_id": name}
            env = await self.call(conn, kind, self.v3("user/delete"), body)
        else:
            body = {"group_id": group, "user_id": name, "face_token": token}
            env = await self.call(conn, kind, self.v3("face/delete"), body)
        if env is not None:
            self.check(f"{kind} of an enrolled person", env["error_code"] == 0)
            if env["error_code"] == 0:
                del self.enrolled[name]

    async def h5(self, conn: list[Any]) -> None:
        env = await self.call(conn, "sessioncode", self.v3("face/liveness/sessioncode"), {})
        if env is None or env["error_code"]:
            return
        body = {"session_id": env["result"]["session_id"], "video_base64": self.video_b64}
        answer = await self.call(conn, "h5 video", "/face-api/face/liveness", body)
        if answer is not None:
            self.check("the real clip passes", (answer.get("result") or {}).get("score", 0) > 0.01)

    # ------------------------------------------------------------------ the run

    async def client(self, k: int, end: float) -> None:
        conn: list[Any] = [None]
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        next_video = time.monotonic() + 10
        try:
            while time.monotonic() < end:
                if k == 0 and time.monotonic() >= next_video:
                    next_video += 60
                    await self.h5(conn)
                    continue
                await self.operation(conn, self.rng.choices(kinds, weights)[0])
        finally:
            await self.hang_up(conn)

    async def sampler(self, end: float) -> None:
        start = time.monotonic()
        seen = 0
        while True:
            now = time.monotonic()
            window = self.answers[seen:]
            seen += len(window)
            by_route: dict[str, list[float]] = defaultdict(list)
            for _, route, seconds, _ in window:
                by_route[route].append(seconds * 1000)
            sample: dict[str, Any] = {
                "t": round(now - start, 1),
                **proc_sample(self.pid),
                "answers": len(window),
                "codes": dict(Counter(str(c) for *_, c in window)),
                "ms": {
                    r: {
                        "n": len(v),
                        "p50": round(float(np.percentile(v, 50)), 1),
                        "p99": round(float(np.percentile(v, 99)), 1),
                    }
                    for r, v in sorted(by_route.items())
                },
                "enrolled": len(self.enrolled),
            }
            self.samples.append(sample)
            if now >= end:
                return
            await asyncio.sleep(min(self.interval, max(0.0, end - now)))

    async def run(self) -> dict[str, Any]:
        self.video_b64 = base64.b64encode(self.video).decode()
        conn: list[Any] = [None]
        for group in GROUPS:  # searches name all four from the start
            await self.call(conn, "group/add", self.v3("group/add"), {"group_id": group})
        await self.hang_up(conn)
        end = time.monotonic() + self.seconds
        tasks = [self.client(k, end) for k in range(self.clients)]
        await asyncio.gather(self.sampler(end), *tasks)
        return self.verdict()

    def verdict(self) -> dict[str, Any]:
        """Growth from the warm-up window (the first fifth of the run, at least one sample
        after the first) to the last fifth, by medians, and what went wrong."""
        s = self.samples
        fifth = max(1, len(s) // 5)
        warm, last = s[1 : 1 + fifth] or s[:1], s[-fifth:]

        def med(xs: list[dict[str, Any]], key: str) -> float:
            return float(np.median([x[key] for x in xs]))

        codes: Counter[str] = Counter()
        for x in s:
            codes.update(x["codes"])
        growth = {
            "rss_bytes": med(last, "rss") - med(warm, "rss"),
            "fds": max(x["fds"] for x in last) - max(x["fds"] for x in warm),
            "threads": max(x["threads"] for x in last) - max(x["threads"] for x in warm),
        }
        problems = []
        if growth["rss_bytes"] > RSS_GROWTH_BOUND:
            problems.append(f"resident memory grew {growth['rss_bytes'] / 2**20:.0f} MiB")
        if growth["fds"] > FD_GROWTH_BOUND:
            problems.append(f"open files grew by {growth['fds']}")
        if growth["threads"] > THREAD_GROWTH_BOUND:
            problems.append(f"threads grew by {growth['threads']}")
        if codes.get("222302"):
            problems.append(f"{codes['222302']} answers of 222302 (system error)")
        if self.failures:
            problems.append(f"transport failures: {dict(self.failures)}")
        wrong = {k: v for k, v in self.checks.items() if k.endswith("wrong")}
        return {
            "seconds": self.seconds,
            "clients": self.clients,
            "answers": len(self.answers),
            "codes": dict(codes),
            "checks": dict(self.checks),
            "wrong_answers": wrong,
            "failures": dict(self.failures),
            "growth": growth,
            "bounds": {
                "rss_bytes": RSS_GROWTH_BOUND,
                "fds": FD_GROWTH_BOUND,
                "threads": THREAD_GROWTH_BOUND,
            },
            "first": s[0],
            "warm_rss_median": med(warm, "rss"),
            "last_rss_median": med(last, "rss"),
            "max_rss": max(x["rss"] for x in s),
            "problems": problems,
            "samples": s,
        }


def soak(seconds: float, clients: int = 4, workdir: Path | None = None) -> dict[str, Any]:
    """Start a server with the liveness models in `workdir`, soak it, stop it (exit status in the
    result)."""
    with tempfile.TemporaryDirectory(prefix="facecore-soak-") as tmp:
        work = workdir or Path(tmp)
        models = work / "models"
        models.mkdir(parents=True, exist_ok=True)
        liveness_models(models)
        server = start_server(work, "--models", str(models), "--workers", "2", threads=0)
        try:
            run = Soak(server.host, server.port, server.proc.pid, seconds, clients)
            result = asyncio.run(run.run())
        finally:
            result_code = server.stop()
        result["server_exit"] = result_code
        log = server.server_log()
        result["log_errors"] = [line for line in log.splitlines() if " ERROR " in line][:20]
        if result_code != 0:
            result["problems"].append(f"the server exited {result_code}")
        if result["log_errors"]:
            result["problems"].append("ERROR lines in the server log")
        return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=1800)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    result = soak(a.seconds, a.clients)
    text = json.dumps(result, indent=1)
    if a.out:
        a.out.write_text(text)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
