"""The HTTP server under load: detect, match and identify at 1, 8 and 32 concurrent clients, an
overload at 256, dynamic batching off and on, against the same pipeline called in-process.

Data (built in a temporary directory on every run, ~30 s):

- ``PEOPLE`` real LFW people with two photos or more (a seeded random pick; "photo 1" and "photo
  2" are the first two of the person's photos in this LFW subset, sorted by name). Each photo is
  put on a 640x480 canvas in memory (resized 1.3-1.8x, at a seeded position, on a noisy gradient
  background) and JPEG-encoded; the BASE64 bodies are prepared before any timing.
- detect: the canvases of photo 1 of ``N_DETECT`` people, face_field = every supported field.
- match: ``N_MATCH`` pairs (photo 1 of person j, photo 2 of person j, or of person j + 1 for odd j).
- identify: a library of ``FACES`` faces in one group, built with ``FaceLibrary.face_add_many``
  before the server starts: random unit vectors for ``FACES - PEOPLE`` fake users, and the
  embedding (``facecore.Engine``) of photo 1 of each real person; the query is the canvas of the
  person's photo 2.

Every answer is checked: detect answers carry all fields and the in-process pipeline's face (box
within 3 px, feature cosine >= 0.99, age within 2 years); match scores equal the in-process score
within 1 point, no pair of two people scores 80 (FAR 1e-4) and the share of same-person answers
that do is reported (asserted >= ``MIN_SAME_AT_80``); identify's top user equals the in-process
top user, and the share of queries whose top user is the query's own person is reported
(asserted >= ``MIN_PERSON``: "most").

Measured (pytest-benchmark; each load run is one round, whose time also counts the clients'
untimed warm-up request; the run's own numbers, ``wall_s`` included, are in ``extra_info``):

- ``test_inprocess[route]``: the pipeline called serially on one thread pinned to one CPU
  (base64 + JPEG decode, ``Engine.detect`` with the route's fields, ``FaceLibrary.identify`` or the
  match score): the serial rate the server's QPS is divided by.
- ``test_server_load[route-cN]``: a server with default settings; ``_load.run_load`` closed-loop
  clients for ``SECONDS`` seconds: QPS of answers with error_code 0, latency p50/p99/max, errors
  by code, CPU used by the generator (this process) and by the server.
- ``test_server_overload``: 256 clients on detect: how many got 222901, the oldest answer, and
  the server still healthy afterwards.
- ``test_server_batching[mode-route]``: concurrency 8 on servers started with dynamic batching on,
  ``--batch-max 8`` (nowait) and ``--batch-max 8 --batch-wait-ms 2`` (on), against the default
  (off) of ``test_server_load``.

Targets (reported, not asserted): identify >= 25 QPS with p99 <= 300 ms at c8; detect with every
field >= 20 QPS at c8; overload: no answer older than 2 s. The generator shares the machine's
cores with the server: its CPU use is in the table.

Standalone: ``python bench/test_server.py [--seconds S] [--people N] [--faces N]`` prints the
tables; a pytest run prints them at the end of the module. Settings also from the environment:
FACECORE_BENCH_SERVER_SECONDS, _PEOPLE, _FACES.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(BENCH) not in sys.path:  # run as a script: the imports bench/conftest.py allows
    sys.path[:0] = [str(BENCH), str(REPO)]

import _load

from tests.server.live_server import Client, start_server

LFW_IMAGES = REPO.parent / "shared" / "data" / "lfw" / "images"
MODELS = Path(os.environ.get("FACECORE_MODELS", str(REPO / "models" / "onnx")))

APPID = "bench"
GROUP = "g100k"
SEED = 20241125
ROUTES = ("detect", "match", "identify")
CONCURRENCY = (1, 8, 32)
OVERLOAD = 256
BATCH_CONCURRENCY = 8
N_DETECT = 16
N_MATCH = 16
ADD_BATCH = 1000
DETECT_FIELDS = "age,gender,expression,emotion,landmark,eye_status,quality,feature"
# Engine fields the server computes for each route (service.py: ALWAYS + wanted; MATCH_FIELDS)
ENGINE_DETECT = (
    "age",
    "gender",
    "expression",
    "emotion",
    "landmark",
    "eye_status",
    "quality",
    "embedding",
    "angle",
)
ENGINE_PROBE = ("embedding", "quality")
DETECT_KEYS = frozenset(
    {
        "face_token",
        "location",
        "face_probability",
        "angle",
        "age",
        "gender",
        "expression",
        "emotion",
        "landmark",
        "landmark72",
        "eye_status",
        "quality",
        "feature",
    }
)
SERVERS = {
    "default": (),
    "batch-nowait": ("--batch-max", "8"),
    "batch-on": ("--batch-max", "8", "--batch-wait-ms", "2"),
}
MIN_SAME = 0.98  # answers that agree with the in-process pipeline
MIN_PERSON = 0.8  # identify: share of queries whose top user is the query's person
# match: share of same-person answers scoring 80 or more. On LFW 77% of same-person pairs do
# (docs/accuracy.md); here 4 of the 8 pairs, whose second photo is rescaled onto a canvas.
MIN_SAME_AT_80 = 0.25
TARGETS = {  # reported against, never asserted
    "identify_qps_c8": 25.0,
    "identify_p99_ms_c8": 300.0,
    "detect_qps_c8": 20.0,
    "overload_max_ms": 2000.0,
}


@dataclass(frozen=True)
class Config:
    seconds: float = float(os.environ.get("FACECORE_BENCH_SERVER_SECONDS", "10"))
    people: int = int(os.environ.get("FACECORE_BENCH_SERVER_PEOPLE", "200"))
    faces: int = int(os.environ.get("FACECORE_BENCH_SERVER_FACES", "100000"))

    @property
    def baseline_s(self) -> float:
        return max(1.0, 0.3 * self.seconds)


# --------------------------------------------------------------------------- the workload


def canvas(photo: np.ndarray, seed: int) -> np.ndarray:
    """``photo`` resized and placed on a seeded 640x480 background (BGR uint8)."""
    import cv2

    rng = np.random.default_rng([SEED, seed])
    top, bottom = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    ramp = np.linspace(0.0, 1.0, 480)[:, None, None]
    bg = (1 - ramp) * top + ramp * bottom + rng.normal(0, 6, (480, 640, 3))
    out = np.clip(bg, 0, 255).astype(np.uint8)
    side = round(photo.shape[0] * float(rng.uniform(1.3, 1.8)))
    face = cv2.resize(photo, (side, side), interpolation=cv2.INTER_LINEAR)
    x, y = int(rng.integers(0, 640 - side + 1)), int(rng.integers(0, 480 - side + 1))
    out[y : y + side, x : x + side] = face
    return out


def jpeg(image: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def photos(name: str) -> list[Path]:
    """The person's LFW photos, sorted (the set holds only the images pairs.txt uses)."""
    return sorted((LFW_IMAGES / name).glob("*.jpg"))


def candidates() -> list[str]:
    """LFW people with at least two photos, in a seeded random order."""
    names = sorted(p.name for p in LFW_IMAGES.iterdir() if len(photos(p.name)) >= 2)
    order = np.random.default_rng(SEED).permutation(len(names))
    return [names[i] for i in order]


def real_user(k: int) -> str:
    return f"real{k}"


@dataclass
class Ref:
    """The in-process pipeline's answer for one image."""

    box: np.ndarray
    embedding: np.ndarray
    age: float | None = None


@dataclass
class Workload:
    people: list[str]
    detect_b64: list[str]
    detect_ref: list[Ref]
    query_b64: list[str]
    query_ref: list[Ref]
    query_top: list[str]  # the in-process identify's top user per query
    match_pairs: list[tuple[int, int, bool]]  # detect image, query image, same person
    match_ref: list[float]
    build_s: float
    prepare_s: float

    def person_rate(self) -> float:
        return float(np.mean([t == real_user(k) for k, t in enumerate(self.query_top)]))

    def bodies(self, route: str) -> list[tuple[bytes, Any]]:
        """(JSON body, check tag) per distinct request of ``route``."""
        import orjson

        def img(b64: str) -> dict[str, str]:
            return {"image": b64, "image_type": "BASE64"}

        if route == "detect":
            return [
                (orjson.dumps({**img(b), "face_field": DETECT_FIELDS}), j)
                for j, b in enumerate(self.detect_b64)
            ]
        if route == "match":
            return [
                (orjson.dumps([img(self.detect_b64[a]), img(self.query_b64[b])]), j)
                for j, (a, b, _) in enumerate(self.match_pairs)
            ]
        return [
            (orjson.dumps({**img(b), "group_id_list": GROUP}), k)
            for k, b in enumerate(self.query_b64)
        ]

    # ----------------------------------------------------------- answer checks

    def check(self, route: str) -> _load.Check:
        return {
            "detect": self.check_detect,
            "match": self.check_match,
            "identify": self.check_identify,
        }[route]

    def check_detect(self, env: dict[str, Any], j: int) -> dict[str, bool]:
        r = env["result"]
        face = r["face_list"][0] if r["face_num"] == 1 and r["face_list"] else {}
        ref = self.detect_ref[j]
        same = False
        if DETECT_KEYS <= face.keys():
            loc = face["location"]
            feat = np.frombuffer(base64.b64decode(face["feature"]), dtype="<f4")
            same = (
                abs(loc["left"] - ref.box[0]) <= 3
                and abs(loc["top"] - ref.box[1]) <= 3
                and feat.shape == ref.embedding.shape
                and float(feat @ ref.embedding) >= 0.99
                and ref.age is not None
                and abs(face["age"] - ref.age) <= 2
            )
        return {"all_fields": DETECT_KEYS <= face.keys(), "same_as_inprocess": same}

    def check_match(self, env: dict[str, Any], j: int) -> dict[str, bool]:
        score = float(env["result"]["score"])
        # 80 is FAR 1e-4 (docs/accuracy.md): two people's photos stay under it, one person's
        # mostly reach it.
        at_80 = "same_person_at_80" if self.match_pairs[j][2] else "other_person_under_80"
        return {
            "same_as_inprocess": abs(score - self.match_ref[j]) <= 1.0,
            at_80: (score >= 80) == self.match_pairs[j][2],
        }

    def check_identify(self, env: dict[str, Any], k: int) -> dict[str, bool]:
        users = env["result"]["user_list"]
        top = users[0]["user_id"] if users else None
        return {"top1_person": top == real_user(k), "same_as_inprocess": top == self.query_top[k]}


def build_workload(cfg: Config, data: Path, engine: Any, log: Callable[[str], None]) -> Workload:
    """Images, in-process answers, and the library at ``data`` (closed on return)."""
    from facecore.pipeline.image import decode_image
    from facecore.score import similarity_to_score
    from facecore.store.library import FaceLibrary, NewFace

    t_prep = time.perf_counter()

    def probe(image: np.ndarray, fields: tuple[str, ...]) -> Any:
        faces = engine.detect(image, 1, fields)
        return faces[0] if faces else None

    people: list[str] = []
    enrolled: list[np.ndarray] = []
    query_b64: list[str] = []
    query_ref: list[Ref] = []
    for name in candidates():
        if len(people) == cfg.people:
            break
        first = probe(decode_image(photos(name)[0].read_bytes()), ("embedding",))
        data2 = jpeg(canvas(decode_image(photos(name)[1].read_bytes()), len(people)))
        second = probe(decode_image(data2), ENGINE_PROBE)
        if first is None or second is None:
            continue
        people.append(name)
        enrolled.append(first.embedding)
        query_b64.append(base64.b64encode(data2).decode())
        query_ref.append(Ref(second.box, second.embedding))
    assert len(people) == cfg.people, f"only {len(people)} usable LFW people"

    detect_b64, detect_ref = [], []
    for j in range(min(N_DETECT, cfg.people)):
        data1 = jpeg(canvas(decode_image(photos(people[j])[0].read_bytes()), 10_000 + j))
        f = probe(decode_image(data1), ENGINE_DETECT)
        assert f is not None, f"no face on the canvas of {people[j]}"
        detect_b64.append(base64.b64encode(data1).decode())
        detect_ref.append(Ref(f.box, f.embedding, f.age))

    pairs = [
        (j, j if j % 2 == 0 else (j + 1) % cfg.people, j % 2 == 0)
        for j in range(min(N_MATCH, len(detect_ref)))
    ]
    match_ref = [
        float(similarity_to_score(float(detect_ref[a].embedding @ query_ref[b].embedding)))
        for a, b, _ in pairs
    ]
    prepare_s = time.perf_counter() - t_prep
    log(f"prepared {len(people)} people, {len(detect_b64)} detect images in {prepare_s:.1f} s")

    t0 = time.perf_counter()
    rng = np.random.default_rng([SEED, 1])
    n_fake = cfg.faces - cfg.people
    lib = FaceLibrary(data)
    try:
        for s in range(0, n_fake, ADD_BATCH):
            e = min(n_fake, s + ADD_BATCH)
            v = rng.standard_normal((e - s, 128), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            fakes: list[tuple[str, NewFace, str | None]] = [
                (f"fake{i}", NewFace(f"{i:032x}", v[i - s]), None) for i in range(s, e)
            ]
            out = lib.face_add_many(APPID, GROUP, fakes)
            assert not any(isinstance(r, Exception) for r in out)
        items = [
            (real_user(k), NewFace(f"{n_fake + k:032x}", enrolled[k]), people[k])
            for k in range(len(people))
        ]
        out = lib.face_add_many(APPID, GROUP, items)
        assert not any(isinstance(r, Exception) for r in out)
        assert lib.stats()["faces"] == cfg.faces
        build_s = time.perf_counter() - t0
        query_top = [lib.identify(APPID, [GROUP], r.embedding)[0].user_id for r in query_ref]
    finally:
        lib.close()
    log(f"library of {cfg.faces} faces built in {build_s:.1f} s")
    return Workload(
        people,
        detect_b64,
        detect_ref,
        query_b64,
        query_ref,
        query_top,
        pairs,
        match_ref,
        build_s,
        prepare_s,
    )


# --------------------------------------------------------------------------- the bench


@dataclass
class Report:
    """Everything measured, and the markdown tables."""

    cfg: Config
    inprocess: dict[str, dict[str, Any]] = field(default_factory=dict)
    loads: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # route, server
    overload_health: dict[str, Any] | None = None
    workload: dict[str, Any] = field(default_factory=dict)

    def ratio(self, route: str, s: dict[str, Any]) -> float | None:
        base = self.inprocess.get(route)
        return s["ok_qps"] / base["qps"] if base else None

    def find(self, route: str, server: str, c: int) -> dict[str, Any] | None:
        for r, srv, s in self.loads:
            if r == route and srv == server and s["concurrency"] == c:
                return s
        return None

    def targets(self) -> list[str]:
        rows = ["| target | measured | goal | met |", "|---|---|---|---|"]

        def row(what: str, measured: str, goal: str, met: bool | None) -> None:
            rows.append(
                f"| {what} | {measured} | {goal} | "
                f"{'-' if met is None else '**yes**' if met else '**no**'} |"
            )

        t = TARGETS
        s = self.find("identify", "default", 8)
        if s:
            row(
                f"identify, {self.cfg.faces:,} faces, c8: QPS",
                f"{s['ok_qps']:.1f}",
                f">= {t['identify_qps_c8']:g}",
                s["ok_qps"] >= t["identify_qps_c8"],
            )
            row(
                f"identify, {self.cfg.faces:,} faces, c8: p99",
                f"{s['ok_p99_ms']:.0f} ms",
                f"<= {t['identify_p99_ms_c8']:g} ms",
                s["ok_p99_ms"] <= t["identify_p99_ms_c8"],
            )
        s = self.find("detect", "default", 8)
        if s:
            row(
                "detect, every field, c8: QPS",
                f"{s['ok_qps']:.1f}",
                f">= {t['detect_qps_c8']:g}",
                s["ok_qps"] >= t["detect_qps_c8"],
            )
        s = self.find("detect", "default", OVERLOAD)
        if s:
            busy = s["errors"].get(str(_load.BUSY), 0)
            row(
                f"overload, detect c{OVERLOAD}: oldest answer",
                f"{s['max_ms']:.0f} ms ({busy} of {s['answered']} answered 222901)",
                f"<= {t['overload_max_ms']:g} ms",
                s["max_ms"] <= t["overload_max_ms"],
            )
            h = self.overload_health
            row("overload: server alive and /health ok after", "yes" if h else "no", "yes", bool(h))
        return rows

    def batching(self) -> list[str]:
        """Dynamic batching at c8: off, the default settings, on with a 2 ms wait."""
        servers = {
            "default": "off (the default, --batch-max 1)",
            "batch-nowait": "on, no wait (--batch-max 8)",
            "batch-on": "on, 2 ms wait (--batch-max 8 --batch-wait-ms 2)",
        }
        rows = []
        for route in ("identify", "detect"):
            cells = []
            for server in servers:
                s = self.find(route, server, BATCH_CONCURRENCY)
                cells.append(
                    "-"
                    if s is None
                    else (
                        f"{s['ok_qps']:.1f} QPS, p99 {_load.fmt(s['ok_p99_ms'], 0)} ms, "
                        f"server {_load.fmt(s['server_cpu_cores'], 2)} cores"
                    )
                )
            if any(c != "-" for c in cells):
                rows.append(f"| {route} | " + " | ".join(cells) + " |")
        if not rows:
            return []
        head = f"| c{BATCH_CONCURRENCY} | " + " | ".join(servers.values()) + " |"
        return ["", head, "|---|---|---|---|", *rows]

    def markdown(self) -> str:
        c = self.cfg
        w = self.workload
        out = [
            (
                f"Server bench: {c.faces:,} faces, {c.people} real people, {c.seconds:g} s per "
                f"load run; prepared in {w.get('prepare_s', 0):.1f} s, library built in "
                f"{w.get('build_s', 0):.1f} s; in-process identify top-1 = person: "
                f"{w.get('person_rate', 0):.3f}"
            ),
            "",
            *self.targets(),
            "",
            "| in-process, serial, 1 thread | calls | QPS | mean (ms) | answers checked |",
            "|---|---|---|---|---|",
        ]
        for route, b in self.inprocess.items():
            out.append(
                f"| {route} | {b['calls']} | {b['qps']:.1f} | {b['mean_ms']:.1f} "
                f"| {b['same']}/{b['calls']} same as prepared |"
            )
        out += self.batching()
        out += [
            "",
            _load.table(
                [
                    _load.table_row(route, server, s, self.ratio(route, s))
                    for route, server, s in self.loads
                ]
            ),
        ]
        return "\n".join(out)


class Bench:
    """The workload, the in-process engine, and at most one server (or the library) open."""

    def __init__(self, tmp: Path, cfg: Config, log: Callable[[str], None] = print) -> None:
        from facecore.pipeline.engine import Engine

        self.tmp = tmp
        self.cfg = cfg
        self.data = tmp / "data"
        self.log = log
        self.env = {"FACECORE_MODELS": str(MODELS)}
        self.engine = Engine(MODELS, threads=1)
        self.work = build_workload(cfg, self.data, self.engine, log)
        self.report = Report(cfg)
        self.report.workload = {
            "prepare_s": self.work.prepare_s,
            "build_s": self.work.build_s,
            "person_rate": self.work.person_rate(),
        }
        self._lib: Any = None
        self.server: Client | None = None
        self.server_name = ""
        self._starts = 0

    def library(self) -> Any:
        from facecore.store.library import FaceLibrary

        self.stop_server()
        if self._lib is None:
            self._lib = FaceLibrary(self.data)
        return self._lib

    def start(self, name: str) -> Client:
        """The server ``name`` (SERVERS), started unless it is the one running."""
        if self.server is not None and self.server_name == name and self.server.alive():
            return self.server
        self.stop_server()
        if self._lib is not None:
            self._lib.close()
            self._lib = None
        self._starts += 1
        t0 = time.perf_counter()
        self.server = start_server(  # over self.tmp / "data": self.data, the library built
            self.tmp,
            *SERVERS[name],
            log=self.tmp / f"server-{self._starts}-{name}.log",
            env=self.env,
            threads=0,
        )
        self.server_name = name
        for route in ROUTES:  # untimed: first model runs, arenas, connections
            _load.load(
                self.server.host, self.server.port, self.requests(route), 2, total=4, warmup=0
            )
        self.log(
            f"server {name} {' '.join(SERVERS[name])} ready in {time.perf_counter() - t0:.1f} s"
        )
        return self.server

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def close(self) -> None:
        self.stop_server()
        if self._lib is not None:
            self._lib.close()
            self._lib = None

    def requests(self, route: str) -> list[_load.Prepared]:
        assert self.server is not None
        path = f"/face-api/v3/face/{route}?appid={APPID}"
        return [
            _load.prepare(self.server.host, self.server.port, path, body, tag)
            for body, tag in self.work.bodies(route)
        ]

    # ----------------------------------------------------------- in-process baseline

    def inprocess_call(self, route: str) -> tuple[Callable[[], None], list[bool]]:
        """One serial call of the route's pipeline per invocation (cycling through its requests),
        and the list where each call records whether its answer equals the prepared one."""
        from facecore.pipeline.image import decode_image
        from facecore.score import similarity_to_score
        from facecore_server.params import decode_base64

        eng, w = self.engine, self.work
        same: list[bool] = []
        lib = self.library() if route == "identify" else None

        def face(b64: str, fields: tuple[str, ...]) -> Any:
            return eng.detect(decode_image(decode_base64(b64)), 1, fields)[0]

        def call() -> None:
            i = len(same)
            if route == "detect":
                j = i % len(w.detect_b64)
                f = face(w.detect_b64[j], ENGINE_DETECT)
                same.append(bool(np.allclose(f.box, w.detect_ref[j].box)))
            elif route == "match":
                j = i % len(w.match_pairs)
                a, b, _ = w.match_pairs[j]
                ea = face(w.detect_b64[a], ENGINE_PROBE).embedding
                eb = face(w.query_b64[b], ENGINE_PROBE).embedding
                score = float(similarity_to_score(float(ea @ eb)))
                same.append(abs(score - w.match_ref[j]) < 1e-3)
            else:
                k = i % len(w.query_b64)
                e = face(w.query_b64[k], ENGINE_PROBE).embedding
                assert lib is not None
                same.append(lib.identify(APPID, [GROUP], e)[0].user_id == w.query_top[k])

        return call, same

    def inprocess(
        self, route: str, run_rounds: Callable[[Callable[[], None], int], None]
    ) -> dict[str, Any]:
        """Time the route's pipeline serially on one thread pinned to one CPU; record it."""
        import cv2
        from threadpoolctl import threadpool_limits

        call, same = self.inprocess_call(route)
        cpus = os.sched_getaffinity(0)
        cv_threads = cv2.getNumThreads()
        os.sched_setaffinity(0, {min(cpus)})  # this thread only
        cv2.setNumThreads(1)
        try:
            with threadpool_limits(limits=1):
                t0 = time.perf_counter()
                call()  # warm-up, untimed
                rounds = max(3, int(self.cfg.baseline_s / max(time.perf_counter() - t0, 1e-3)))
                t0 = time.perf_counter()
                run_rounds(call, rounds)
                wall = time.perf_counter() - t0
        finally:
            cv2.setNumThreads(cv_threads)
            os.sched_setaffinity(0, cpus)
        out = {
            "route": route,
            "calls": rounds,
            "qps": rounds / wall,
            "mean_ms": 1000 * wall / rounds,
            "same": int(sum(same[1:])),
            "cpu": min(cpus),
        }
        self.report.inprocess[route] = out
        return out

    # ----------------------------------------------------------- load runs

    def run(self, route: str, server: str, concurrency: int, warmup: int = 1) -> _load.LoadResult:
        srv = self.start(server)
        return _load.load(
            srv.host,
            srv.port,
            self.requests(route),
            concurrency,
            duration=self.cfg.seconds,
            warmup=warmup,
            check=self.work.check(route),
            server_pid=srv.proc.pid,
        )

    def record(self, route: str, server: str, r: _load.LoadResult) -> dict[str, Any]:
        s = r.summary()
        self.report.loads.append((route, server, s))
        self.log(_load.table_row(route, server, s, self.report.ratio(route, s)))
        return s

    def health_after_overload(self) -> dict[str, Any] | None:
        """/health of the running server, and one detect answered right; None when not."""
        srv = self.server
        if srv is None or not srv.alive():
            return None
        h = srv.health()
        r = _load.load(
            srv.host,
            srv.port,
            self.requests("detect")[:1],
            1,
            total=1,
            warmup=0,
            check=self.work.check("detect"),
        )
        if h.get("status") != "ok" or r.ok != 1 or r.rate("same_as_inprocess") != 1.0:
            return None
        self.report.overload_health = h
        return h


def check_load(bench: Bench, route: str, s: dict[str, Any], r: _load.LoadResult) -> None:
    """Correctness of a load run (no timing): only 0 / 222901 answers, no transport failure,
    answers equal to the in-process pipeline's."""
    srv = bench.server
    log = srv.log.read_text(errors="replace")[-2000:] if srv else ""
    assert not s["failures"], f"transport failures {s['failures']}: {r.bad_examples}\n{log}"
    assert set(s["errors"]) <= {str(_load.BUSY)}, f"errors {s['errors']}\n{log}"
    assert r.ok > 0, s
    assert "answer_shape" not in r.checks, r.bad_examples
    same = r.rate("same_as_inprocess")
    assert same is not None and same >= MIN_SAME, f"{same}: {r.bad_examples}"
    if route == "identify":
        person = r.rate("top1_person")
        assert person is not None and person >= MIN_PERSON, f"top-1 = person for {person}"
    if route == "match":
        assert r.rate("other_person_under_80") == 1.0, r.bad_examples
        same_at_80 = r.rate("same_person_at_80")
        assert same_at_80 is not None and same_at_80 >= MIN_SAME_AT_80, f"{same_at_80} at 80"
    if route == "detect":
        assert r.rate("all_fields") == 1.0, r.bad_examples


# --------------------------------------------------------------------------- pytest


@pytest.fixture(scope="module")
def bench(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Bench]:
    b = Bench(tmp_path_factory.mktemp("server-bench"), Config(), log=lambda s: None)
    try:
        yield b
    finally:
        b.close()
        tr = request.config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None and (b.report.loads or b.report.inprocess):
            text = b.report.markdown()

            def show() -> None:  # at the very end, after pytest-benchmark's tables
                tr.write_sep("-", "server bench")
                for line in text.splitlines():
                    tr.write_line(line)

            request.config.add_cleanup(show)


def _extra(bench: Bench, route: str, server: str, s: dict[str, Any]) -> dict[str, Any]:
    base = bench.report.inprocess.get(route)
    return {
        "kind": "server-load",
        "route": route,
        "server": server,
        "server_flags": list(SERVERS[server]),
        "faces": bench.cfg.faces,
        "people": bench.cfg.people,
        "seconds": bench.cfg.seconds,
        "face_field": DETECT_FIELDS if route == "detect" else None,
        "inprocess_serial_qps": base["qps"] if base else None,
        "ratio_to_inprocess": bench.report.ratio(route, s),
        "targets": TARGETS,
        **s,
    }


@pytest.mark.benchmark(group="server: in-process pipeline, serial, 1 thread")
@pytest.mark.parametrize("route", ROUTES)
def test_inprocess(benchmark: Any, bench: Bench, route: str) -> None:
    """The serial rate of the route's pipeline in this process (the ratio's denominator)."""

    def rounds(call: Callable[[], None], n: int) -> None:
        benchmark.pedantic(call, rounds=n, iterations=1, warmup_rounds=0)

    out = bench.inprocess(route, rounds)
    benchmark.extra_info.update(kind="server-inprocess", faces=bench.cfg.faces, threads=1, **out)
    assert out["same"] == out["calls"], "the pipeline's answers changed between calls"


LOAD_CASES = [(route, c) for route in ROUTES for c in CONCURRENCY]


@pytest.mark.benchmark(group="server: load, default settings")
@pytest.mark.parametrize(
    ("route", "concurrency"), LOAD_CASES, ids=[f"{r}-c{c}" for r, c in LOAD_CASES]
)
def test_server_load(benchmark: Any, bench: Bench, route: str, concurrency: int) -> None:
    bench.start("default")  # not timed: the round is the load run alone
    r = benchmark.pedantic(
        bench.run, args=(route, "default", concurrency), rounds=1, iterations=1, warmup_rounds=0
    )
    s = bench.record(route, "default", r)
    benchmark.extra_info.update(_extra(bench, route, "default", s))
    check_load(bench, route, s, r)


@pytest.mark.benchmark(group="server: overload")
def test_server_overload(benchmark: Any, bench: Bench) -> None:
    """256 clients on detect: refusals are 222901, and the server survives."""
    bench.start("default")
    r = benchmark.pedantic(
        bench.run, args=("detect", "default", OVERLOAD, 0), rounds=1, iterations=1, warmup_rounds=0
    )
    s = bench.record("detect", "default", r)
    health = bench.health_after_overload()
    benchmark.extra_info.update(_extra(bench, "detect", "default", s), health_after=health)
    check_load(bench, "detect", s, r)
    assert s["errors"].get(str(_load.BUSY), 0) > 0, "256 clients on 2 workers and no 222901"
    assert health is not None, "the server is not healthy after the overload"
    assert health["faces"] == bench.cfg.faces


BATCH_CASES = [(mode, route) for mode in ("nowait", "on") for route in ("identify", "detect")]


@pytest.mark.benchmark(group="server: dynamic batching, c8")
@pytest.mark.parametrize(("mode", "route"), BATCH_CASES, ids=[f"{m}-{r}" for m, r in BATCH_CASES])
def test_server_batching(benchmark: Any, bench: Bench, mode: str, route: str) -> None:
    server = f"batch-{mode}"
    bench.start(server)
    r = benchmark.pedantic(
        bench.run, args=(route, server, BATCH_CONCURRENCY), rounds=1, iterations=1, warmup_rounds=0
    )
    s = bench.record(route, server, r)
    benchmark.extra_info.update(_extra(bench, route, server, s))
    check_load(bench, route, s, r)


# --------------------------------------------------------------------------- standalone


def _serial(call: Callable[[], None], rounds: int) -> None:
    for _ in range(rounds):
        call()


def main(argv: list[str] | None = None) -> int:
    d = Config()
    p = argparse.ArgumentParser(description="FaceCore server bench (see the module docstring)")
    p.add_argument("--seconds", type=float, default=d.seconds, help="per load run")
    p.add_argument("--people", type=int, default=d.people)
    p.add_argument("--faces", type=int, default=d.faces)
    p.add_argument("--routes", default=",".join(ROUTES))
    p.add_argument("--no-overload", action="store_true")
    p.add_argument("--no-batching", action="store_true")
    a = p.parse_args(argv)
    cfg = replace(d, seconds=a.seconds, people=a.people, faces=a.faces)
    routes = [r for r in a.routes.split(",") if r]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="facecore-server-bench-") as tmp:
        b = Bench(Path(tmp), cfg, log=lambda s: print(s, file=sys.stderr, flush=True))
        try:
            for route in routes:
                b.inprocess(route, _serial)
            for route in routes:
                for c in CONCURRENCY:
                    b.record(route, "default", b.run(route, "default", c))
            if not a.no_overload and "detect" in routes:
                b.record("detect", "default", b.run("detect", "default", OVERLOAD, 0))
                if b.health_after_overload() is None:
                    print("the server is NOT healthy after the overload", file=sys.stderr)
            if not a.no_batching:
                for mode in ("nowait", "on"):
                    for route in ("identify", "detect"):
                        if route in routes:
                            b.record(route, f"batch-{mode}", b.run(route, f"batch-{mode}", 8))
        finally:
            b.close()
    print(b.report.markdown())
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
