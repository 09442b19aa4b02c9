"""Turn a pytest-benchmark JSON of this suite into the markdown tables of bench/README.md.

    .venv/bin/python bench/report.py /tmp/bench.json [-o table.md]

Ratios use each benchmark's fastest round (``min``: the round least disturbed by other work on
the machine); the tables show the median next to it. Tests are recognised by their
``extra_info["kind"]`` (scan, floor, hnsw, hnsw-build, memory, pipeline, library-*), so a partial
run (``-k``) renders whatever it has.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENGINE_ORDER = ("facecore-i8", "facecore-f16", "numpy-f32", "faiss-flat-f32", "faiss-sq8")
OURS = "facecore-i8"
SQ8 = "faiss-sq8"
HNSW_OURS = "facecore-hnsw"
FLOOR_GOAL = 1.5
BATCH_GOAL = 5.0
HNSW_LATENCY_GOAL_MS = 1.0
HNSW_RECALL_GOAL = 0.99
TARGET_DIM = 128


@dataclass(frozen=True)
class Result:
    name: str
    min_s: float
    median_s: float
    rounds: int
    info: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.info.get("kind", ""))

    def per_query_ms(self) -> float:
        return 1e3 * self.min_s / int(self.info.get("batch", 1))

    def per_query_median_ms(self) -> float:
        return 1e3 * self.median_s / int(self.info.get("batch", 1))


def load(path: Path) -> tuple[list[Result], dict[str, Any]]:
    doc = json.loads(path.read_text())
    results = [
        Result(
            b["name"],
            b["stats"]["min"],
            b["stats"]["median"],
            b["stats"]["rounds"],
            b.get("extra_info", {}),
        )
        for b in doc["benchmarks"]
    ]
    return results, doc


def find(results: Iterable[Result], **match: Any) -> Result | None:
    for r in results:
        if all(r.info.get(k) == v for k, v in match.items()):
            return r
    return None


def floor(results: list[Result], dim: int, form: str, threads: int = 1) -> Result | None:
    """The fastest read-only read of ``form``'s bytes with ``threads`` threads."""
    reads = [
        r
        for r in results
        if r.kind == "floor"
        and r.info["dim"] == dim
        and r.info["form"] == form
        and r.info["read_only"]
        and r.info["threads"] == threads
    ]
    return min(reads, key=lambda r: r.min_s, default=None)


# --------------------------------------------------------------------------- formatting


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ms(r: Result | None) -> str:
    """Per-query time, fastest round (median)."""
    if r is None:
        return "-"
    return f"{_num(r.per_query_ms())} ({_num(r.per_query_median_ms())})"


def count(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"


def _num(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fastest(r: Result | None) -> float | None:
    """Fastest round in seconds (a whole call, whatever the batch)."""
    return None if r is None else r.min_s


def per_query(r: Result | None) -> float | None:
    return None if r is None else r.per_query_ms()


def fmt_ratio(x: float | None, suffix: str = "x") -> str:
    return "-" if x is None else f"{x:.2f}{suffix}"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("**yes**" if ok else "**NO**")


def _ordered_engines(names: Iterable[str], order: tuple[str, ...]) -> list[str]:
    return sorted(set(names), key=lambda e: (order.index(e) if e in order else len(order), e))


# --------------------------------------------------------------------------- sections


def targets(results: list[Result]) -> str:
    d = TARGET_DIM
    ours = find(results, kind="scan", engine=OURS, dim=d, batch=1, threads=1)
    ours_batch = find(results, kind="scan", engine=OURS, dim=d, batch=1000, threads=1)
    sq8 = find(results, kind="scan", engine=SQ8, dim=d, batch=1, threads=1)
    fl = floor(results, d, "i8")
    rows: list[list[str]] = []

    vs_floor = ratio(fastest(ours), fastest(fl))
    rows.append(
        [
            f"int8 scan, d={d}, 1M, 1 query, 1 thread, vs read floor",
            f"{fmt_ratio(vs_floor)} ({ms(ours)} ms vs {ms(fl)} ms, {fl.info['method'] if fl else '-'})",
            f"<= {FLOOR_GOAL}x",
            verdict(None if vs_floor is None else vs_floor <= FLOOR_GOAL),
        ]
    )
    vs_sq8 = ratio(fastest(sq8), fastest(ours))
    rows.append(
        [
            "int8 scan vs FAISS SQ8 int8, same case",
            f"{fmt_ratio(vs_sq8)} faster ({ms(ours)} ms vs {ms(sq8)} ms)",
            "> 1x",
            verdict(None if vs_sq8 is None else vs_sq8 > 1),
        ]
    )
    gain = ratio(per_query(ours), per_query(ours_batch))
    rows.append(
        [
            f"1000-query batch vs single query, per-query throughput (int8, d={d}, 1 thread)",
            f"{fmt_ratio(gain)} ({ms(ours_batch)} ms/query vs {ms(ours)} ms)",
            f">= {BATCH_GOAL}x",
            verdict(None if gain is None else gain >= BATCH_GOAL),
        ]
    )
    for m in sorted((r for r in results if r.kind == "memory"), key=lambda r: r.info["dim"]):
        per, goal = m.info["bytes_per_face"], m.info["target_bytes_per_face"]
        rows.append(
            [
                f"memory of the exact int8 index, d={m.info['dim']}, 1M",
                f"{per:.1f} B/face (resident growth {m.info['rss_growth_per_face']:.1f})",
                f"<= {goal:.1f} B/face",
                verdict(per <= goal),
            ]
        )
    h1 = find(results, kind="hnsw", engine=HNSW_OURS, batch=1, threads=1)
    hb = find(results, kind="hnsw", engine=HNSW_OURS, batch=1000, threads=1)
    if h1 is not None:
        rows.append(
            [
                f"HNSW (defaults), d={h1.info['dim']}, {count(h1.info['n'])}, 1 query, 1 thread: latency",
                f"{ms(h1)} ms, at recall@1 {h1.info['recall_at1_vs_exact_scan']:.3f}",
                f"<= {HNSW_LATENCY_GOAL_MS} ms",
                verdict(h1.per_query_ms() <= HNSW_LATENCY_GOAL_MS),
            ]
        )
    if hb is not None:
        recall = hb.info["recall_at1_vs_exact_scan"]
        rows.append(
            [
                f"HNSW recall@1 against the exact scan ({hb.info['checked_queries']} queries)",
                f"{recall:.3f}",
                f">= {HNSW_RECALL_GOAL}",
                verdict(recall >= HNSW_RECALL_GOAL),
            ]
        )
    sweep = [r for r in results if r.kind == "hnsw-sweep" and r.info["engine"] == HNSW_OURS]
    good = [r for r in sweep if r.info["recall_at1_vs_exact_scan"] >= HNSW_RECALL_GOAL]
    if sweep:
        best = min(good, key=lambda r: r.min_s, default=None)
        rows.append(
            [
                "HNSW: fastest swept expansion_search with recall@1 >= 0.99",
                "none reached it"
                if best is None
                else f"expansion_search={best.info['expansion_search']}: {ms(best)} ms, recall {best.info['recall_at1_vs_exact_scan']:.3f}",
                f"<= {HNSW_LATENCY_GOAL_MS} ms",
                verdict(best is not None and best.per_query_ms() <= HNSW_LATENCY_GOAL_MS),
            ]
        )
    return table(["target", "measured", "goal", "met"], rows)


def scans(results: list[Result], dim: int) -> str:
    mine = [r for r in results if r.kind == "scan" and r.info["dim"] == dim]
    rows = []
    for engine in _ordered_engines((r.info["engine"] for r in mine), ENGINE_ORDER):
        cell = {(r.info["batch"], r.info["threads"]): r for r in mine if r.info["engine"] == engine}
        one, batch = cell.get((1, 1)), cell.get((1000, 1))
        form = next(iter(cell.values())).info["form"]
        fl = floor(results, dim, "i8" if form == "sq8" else form)
        gbs = None if one is None else one.info["bytes"] / one.min_s / 1e9
        agree_exact = min(r.info["top1_exact"] for r in cell.values())
        agree_tie = min(r.info["top1_near_tie"] for r in cell.values())
        rows.append(
            [
                engine,
                ms(one),
                ms(cell.get((1, 2))),
                ms(batch),
                ms(cell.get((1000, 2))),
                fmt_ratio(ratio(per_query(one), per_query(batch))),
                fmt_ratio(ratio(fastest(one), fastest(fl))),
                "-" if gbs is None else f"{gbs:.1f}",
                f"{next(iter(cell.values())).info['bytes'] / dim_n(cell):.0f}",
                f"{agree_exact:.3f} / {agree_tie:.3f}",
            ]
        )
    header = [
        "engine",
        "1 query, 1t (ms)",
        "1 query, 2t (ms)",
        "1000 queries, 1t (ms/query)",
        "1000 queries, 2t (ms/query)",
        "batch gain, 1t",
        "1 query 1t vs floor",
        "GB/s, 1 query 1t",
        "bytes/face scanned",
        "top-1 = exact / near tie",
    ]
    return table(header, rows)


def dim_n(cell: dict[Any, Result]) -> int:
    return int(next(iter(cell.values())).info["n"])


def floors(results: list[Result], dim: int) -> str:
    mine = [r for r in results if r.kind == "floor" and r.info["dim"] == dim]
    forms = [f for f in ("i8", "f16", "f32") if any(r.info["form"] == f for r in mine)]
    rows = []
    read_only = {r.info["method"]: r.info["read_only"] for r in mine}
    for method, only_reads in read_only.items():
        threads = next(r.info["threads"] for r in mine if r.info["method"] == method)
        row = [method + f", {threads}t" + ("" if only_reads else " (read + write)")]
        for form in forms:
            r = find(mine, method=method, form=form)
            row.append(
                "-" if r is None else f"{ms(r)} ms, {r.info['bytes'] / r.min_s / 1e9:.1f} GB/s"
            )
        rows.append(row)
    sizes = {f: next(r.info["bytes"] for r in mine if r.info["form"] == f) for f in forms}
    header = ["read", *(f"{f} ({sizes[f] / 1e6:.0f} MB)" for f in forms)]
    return table(header, rows)


def hnsw(results: list[Result]) -> str:
    mine = [r for r in results if r.kind in ("hnsw", "hnsw-build")]
    rows = []
    for engine in _ordered_engines((r.info["engine"] for r in mine), (HNSW_OURS,)):
        cell = {
            (r.info.get("batch"), r.info.get("threads")): r
            for r in mine
            if r.info["engine"] == engine and r.kind == "hnsw"
        }
        build = find(mine, kind="hnsw-build", engine=engine)
        any_search = next(iter(cell.values()), None)
        batch = cell.get((1000, 1))
        build_1m = "-"
        if any_search is not None:
            build_1m = f"{any_search.info['build_s']:.0f} s" + (
                " (cached)" if any_search.info["build_cached"] else ""
            )
        rows.append(
            [
                engine,
                build_1m,
                "-"
                if build is None
                else f"{build.min_s:.1f} s (top-1 = f32 exact {build.info['top1_exact']:.3f})",
                ms(cell.get((1, 1))),
                ms(cell.get((1, 2))),
                ms(batch),
                ms(cell.get((1000, 2))),
                "-" if batch is None else f"{batch.info['recall_at1_vs_exact_scan']:.3f}",
                "-"
                if batch is None
                else f"{batch.info['top1_exact']:.3f} / {batch.info['top1_near_tie']:.3f}",
                "-" if any_search is None else f"{any_search.info['bytes_per_face']:.0f}",
            ]
        )
    header = [
        "index",
        "build 1M (2 cores)",
        "build 100k",
        "1 query, 1t (ms)",
        "1 query, 2t (ms)",
        "1000 queries, 1t (ms/query)",
        "1000 queries, 2t (ms/query)",
        "recall@1 vs exact scan",
        "top-1 vs f32 = exact / near tie",
        "bytes/face",
    ]
    return table(header, rows)


def hnsw_sweep(results: list[Result]) -> str:
    """One-query, one-thread latency and recall@1 per expansion_search (default row included)."""
    mine = [
        r
        for r in results
        if r.kind == "hnsw-sweep"
        or (r.kind == "hnsw" and r.info["batch"] == 1 and r.info["threads"] == 1)
    ]
    rows = [
        [
            r.info["engine"],
            str(r.info["expansion_search"]),
            ms(r),
            f"{r.info['recall_at1_vs_exact_scan']:.3f}",
            f"{r.info['top1_exact']:.3f}",
        ]
        for r in sorted(
            mine,
            key=lambda r: (
                r.info["engine"] != HNSW_OURS,
                r.info["engine"],
                r.info["expansion_search"],
            ),
        )
    ]
    return table(
        [
            "index",
            "expansion_search",
            "1 query, 1t (ms)",
            "recall@1 vs exact scan",
            "top-1 = f32 exact",
        ],
        rows,
    )


def memory(results: list[Result]) -> str:
    rows = [
        [
            str(r.info["dim"]),
            f"{r.info['bytes_per_face']:.1f}",
            f"{r.info['rss_growth_per_face']:.1f}",
            f"{r.info['target_bytes_per_face']:.1f}",
            f"{r.min_s:.2f} s",
        ]
        for r in sorted((r for r in results if r.kind == "memory"), key=lambda r: r.info["dim"])
    ]
    return table(
        [
            "d",
            "memory_bytes() / face",
            "resident (RssAnon) growth / face",
            "target 1.1 x (d + 8)",
            "build 1M (add 10k at a time)",
        ],
        rows,
    )


def pipeline(results: list[Result]) -> str:
    """End-to-end detect+align+embed against face_recognition, per-stage latency, LFW accuracy."""
    parts = []
    rows = []
    for threads in sorted({int(r.info["threads"]) for r in results if r.kind == "pipeline"}):
        ours = find(results, kind="pipeline", engine="facecore", threads=threads)
        ref = find(results, kind="pipeline", engine="face_recognition", threads=threads)
        rows.append([str(threads), ms(ours), ms(ref), fmt_ratio(ratio(fastest(ref), fastest(ours)))])
    if rows:
        parts += [
            "End-to-end detect + align + embed, 640x480 photo, one face (`../shared/data/spoof/image_T1.jpg`):",
            table(["threads", "FaceCore (ms)", "face_recognition, dlib (ms)", "speed-up"], rows),
        ]
    stages = sorted({str(r.info["stage"]) for r in results if r.kind == "stage"})
    threads_all = sorted({int(r.info["threads"]) for r in results if r.kind == "stage"})
    if stages:
        rows = [
            [stage] + [ms(find(results, kind="stage", stage=stage, threads=t)) for t in threads_all]
            for stage in stages
        ]
        parts += [
            "Per stage, same photo (`age_gender` and `quality` are whole `detect` calls with that field):",
            table(["stage"] + [f"{t} thread{'s' if t > 1 else ''} (ms)" for t in threads_all], rows),
        ]
    lfw = find(results, kind="lfw")
    if lfw is not None:
        rows = [
            [
                name,
                f"{lfw.info[name]['accuracy'] * 100:.2f}%",
                f"{lfw.info[name]['accuracy_4fold_cv'] * 100:.2f}%",
                str(lfw.info[name]["images_without_face"]),
            ]
            for name in ("facecore", "face_recognition")
        ]
        parts += [
            "LFW developer pairs (2,400), best threshold and 4-fold cross-validated:",
            table(["pipeline", "accuracy", "4-fold", "images without a face"], rows),
        ]
    return "\n\n".join(parts)


def library(results: list[Result]) -> str:
    """The face library at 1M faces: targets, add throughput, identify latency vs its index."""
    modes = {
        str(r.info.get("index_mode", "exact")) for r in results if r.kind.startswith("library-")
    }
    parts = [
        "Group index mode: "
        + ", ".join(
            "`exact` (the library's default)"
            if m == "exact"
            else f"`{m}` (FaceLibrary(index_mode={m!r}), FACECORE_BENCH_LIBRARY_INDEX={m})"
            for m in sorted(modes)
        )
    ]
    rows = []
    for start, what in (
        ("snapshot", "from the saved snapshot"),
        ("rebuild", "snapshot removed, rebuilt from RocksDB"),
    ):
        r = find(results, kind="library-open", start=start)
        if r is None:
            continue
        i = r.info
        rows.append(
            [
                f"open {count(i['faces'])} library + first identify, fresh process, {what}",
                f"{i['open_identify_s']:.2f} s (open {i['open_s']:.2f} s + identify {1e3 * i['first_identify_s']:.0f} ms)",
                f"<= {i['open_target_s']:g} s",
                verdict(i["open_identify_s"] <= i["open_target_s"]),
            ]
        )
    for start in ("snapshot", "rebuild"):
        r = find(results, kind="library-open", start=start)
        if r is None:
            continue
        i = r.info
        rows.append(
            [
                f"resident memory per face after open + 1 identify ({start}): RssAnon growth",
                f"{i['rss_anon_per_face']:.0f} B/face (VmRSS growth, with mapped files: {i['vm_rss_per_face']:.0f})",
                f"<= {i['bytes_target']:g} B/face",
                verdict(i["rss_anon_per_face"] <= i["bytes_target"]),
            ]
        )
    if rows:
        parts.append(table(["target", "measured", "goal", "met"], rows))

    adds = [r for r in results if r.kind == "library-add"]
    if adds:
        rows = []
        for key, n_groups in (("build_1m", 1), ("build_10", 10)):
            b = next((a.info[key] for a in adds if key in a.info), None)
            if b is None:
                continue
            what = "1 group" if n_groups == 1 else f"10 groups of {count(b['faces'] // 10)}"
            seg = b["segment_s"]
            per = b["faces"] // len(seg)
            rates = ", ".join(f"{per / s:,.0f}" for s in seg)
            rows.append(
                [
                    f"face_add_many, batches of 1000, {count(b['faces'])} faces into {what}"
                    + (" (cached build)" if b["cached"] else ""),
                    f"{b['faces'] / b['add_s']:,.0f}",
                    f"{b['add_s']:.1f} s; per {count(per)} faces: {rates} faces/s; close {b['close_s']:.1f} s",
                ]
            )
        for a in sorted(adds, key=lambda a: a.info["call"]):
            i = a.info
            name = (
                "face_add_many, batches of 1000"
                if i["call"] == "add_many"
                else "face_add, one face a call"
            )
            rows.append(
                [
                    f"{name}, {count(i['faces'])} faces into a new library",
                    f"{i['faces'] / a.min_s:,.0f}",
                    f"{a.min_s:.1f} s; top-1 right {i['top1_correct']:.3f} ({i['checked_queries']} queries)",
                ]
            )
        parts.append(table(["add", "faces/s", "detail"], rows))

    ident = [r for r in results if r.kind == "library-identify"]
    if ident:
        rows = []
        cases = sorted(
            {
                (r.info["groups"], r.info["max_user_num"])
                for r in ident
                if r.info["engine"] != "numpy-f32"
            }
        )
        for groups, m in cases:
            cell = {
                (r.info["engine"], r.info["threads"]): r
                for r in ident
                if r.info["groups"] == groups and r.info["max_user_num"] == m
            }
            lib1, lib2 = cell.get(("library", 1)), cell.get(("library", 2))
            ix1, ix2 = cell.get(("index", 1)), cell.get(("index", 2))
            any_r = next(iter(cell.values()))
            hnsw = any_r.info.get("index_uses_hnsw")
            rows.append(
                [
                    f"{groups} x {count(any_r.info['faces_per_group'])}"
                    + (" (HNSW)" if hnsw else " (exact)"),
                    str(m),
                    ms(lib1),
                    ms(lib2),
                    f"{ms(ix1)} (k={ix1.info['k'] if ix1 else '-'})",
                    ms(ix2),
                    fmt_ratio(ratio(fastest(lib1), fastest(ix1))),
                    fmt_ratio(ratio(fastest(lib2), fastest(ix2))),
                    f"{min(r.info['top1_correct'] for r in cell.values()):.3f}",
                ]
            )
        np1 = find(ident, engine="numpy-f32", threads=1)
        np2 = find(ident, engine="numpy-f32", threads=2)
        if np1 is not None or np2 is not None:
            any_np = np1 or np2
            assert any_np is not None
            rows.append(
                [
                    f"numpy f32 brute force, {count(any_np.info['faces_per_group'])} (`base @ q`, argmax)",
                    "1",
                    ms(np1),
                    ms(np2),
                    "-",
                    "-",
                    "-",
                    "-",
                    f"{min(r.info['top1_correct'] for r in (np1, np2) if r is not None):.3f}",
                ]
            )
        header = [
            "groups x faces",
            "max_user_num",
            "identify, 1t (ms)",
            "identify, 2t (ms)",
            "VectorIndex.search, 1t (ms)",
            "VectorIndex.search, 2t (ms)",
            "library / index, 1t",
            "library / index, 2t",
            "top-1 user right",
        ]
        parts.append(table(header, rows))
    return "\n\n".join(parts)


def machine(doc: dict[str, Any]) -> str:
    m = doc.get("machine_info", {})
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    return "\n".join(
        [
            f"- date: {doc.get('datetime', '?')}",
            f"- CPU: {m.get('cpu_model', '?')}, {m.get('hardware_threads', '?')} hardware threads",
            f"- facecore SIMD level: {m.get('facecore_simd_level', '?')} (available: {', '.join(m.get('facecore_available_simd_levels', []))})",
            f"- {versions}",
            f"- commit: {_commit(doc)}",
        ]
    )


def _commit(doc: dict[str, Any]) -> str:
    info = doc.get("commit_info") or {}
    if not info.get("id"):
        return "unknown"
    return f"{info['id'][:10]}" + (" + uncommitted changes" if info.get("dirty") else "")


def render(results: list[Result], doc: dict[str, Any]) -> str:
    note = "Times: fastest round (median round in brackets); ratios use the fastest rounds."
    parts = ["### Machine", machine(doc), note]
    if any(r.kind in ("scan", "floor") for r in results):
        parts += ["### Targets", targets(results)]
    for dim in sorted({int(r.info["dim"]) for r in results if r.kind in ("scan", "floor")}):
        parts += [f"### Exact scans, N = 1M, d = {dim}", scans(results, dim)]
        parts += [
            f"### Read floor, d = {dim} (one pass over the bytes a scan reads)",
            floors(results, dim),
        ]
    if any(r.kind in ("hnsw", "hnsw-build") for r in results):
        parts += ["### HNSW, default parameters", hnsw(results)]
    if any(r.kind == "hnsw-sweep" for r in results):
        parts += [
            "### HNSW, expansion_search sweep (1 query, 1 thread, recall over all queries)",
            hnsw_sweep(results),
        ]
    if any(r.kind == "memory" for r in results):
        parts += ["### Memory per face, exact int8 index", memory(results)]
    if any(r.kind in ("pipeline", "stage", "lfw") for r in results):
        parts += ["### Face pipeline", pipeline(results)]
    if any(r.kind.startswith("library-") for r in results):
        parts += ["### Face library", library(results)]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="output of pytest --benchmark-json")
    parser.add_argument(
        "-o", "--output", type=Path, help="write the markdown here instead of stdout"
    )
    args = parser.parse_args(argv)
    results, doc = load(args.json)
    text = render(results, doc)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
