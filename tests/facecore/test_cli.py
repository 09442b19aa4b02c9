"""The `facecore` command line on real LFW images: folder and CSV import, resume, a SIGKILL in the
middle of an import, reindex. Each run is a real subprocess (`python -m facecore.cli`)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import facecore
import numpy as np
import pytest
from facecore.pipeline.engine import Engine
from facecore.pipeline.image import decode_image
from facecore.score import score_to_similarity
from facecore.store.library import FaceLibrary

from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.slow

LFW = SHARED_DATA / "lfw" / "images"
NO_FACE = SHARED_DATA / "misc" / "pilatus800.jpg"
HYPHENATED = "Catherine_Zeta-Jones"  # becomes user Catherine_Zeta_Jones
APP, GROUP = "app1", "lfw"
# The subprocess imports the same facecore as this process (in-tree or installed).
ENV = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(
        [str(Path(facecore.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    ),
)


def cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "facecore.cli", *map(str, args)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"facecore {args} failed ({out.returncode}):\n{out.stderr}")
    return out


def summary(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def read_report(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def embed(engine: Engine, path: Path) -> np.ndarray:
    face = engine.detect(decode_image(path.read_bytes()), 1, ("embedding",))[0]
    assert face.embedding is not None
    return face.embedding


def all_faces(lib: FaceLibrary, appid: str, group: str) -> dict[str, set[str]]:
    """user -> face tokens, through the public listing calls."""
    users = lib.user_list(appid, group, 0, 1000)
    return {u: {f.face_token for f in lib.face_list(appid, group, u)} for u in users}


@pytest.fixture(scope="module")
def people() -> list[str]:
    """40 LFW people with 2-4 images each (sorted, so the set is fixed), plus a hyphenated name."""
    chosen = []
    for name in sorted(os.listdir(LFW)):
        if "-" not in name and 2 <= len(os.listdir(LFW / name)) <= 4:
            chosen.append(name)
        if len(chosen) == 40:
            break
    return [*chosen, HYPHENATED]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, people: list[str]) -> Path:
    """One folder per person (symlinks to LFW), a folder of two bad files, a reserved-word id."""
    root = tmp_path_factory.mktemp("faces")
    for name in people:
        (root / name).mkdir()
        for f in sorted(os.listdir(LFW / name)):
            (root / name / f).symlink_to(LFW / name / f)
    bad = root / "Bad_Files"
    bad.mkdir()
    (bad / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    (bad / "mountain.jpg").symlink_to(NO_FACE)
    (root / "me").mkdir()  # "me" is a reserved word: refused as a user id
    (root / "me" / "x.jpg").symlink_to(LFW / people[0] / min(os.listdir(LFW / people[0])))
    return root


def lfw_images(tree: Path) -> dict[str, str]:
    """relative path -> user id, for every LFW image of the tree (each holds one face)."""
    out = {}
    for d in sorted(tree.iterdir()):
        if d.name in ("Bad_Files", "me"):
            continue
        for f in sorted(d.iterdir()):
            out[f"{d.name}/{f.name}"] = d.name.replace("-", "_")
    return out


@pytest.fixture(scope="module")
def imported(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = tmp_path_factory.mktemp("data")
    report = data.parent / f"{data.name}-report.csv"
    out = cli("import", tree, "--appid", APP, "--group", GROUP, "--data", data,
              "--workers", "2", "--report", report)  # fmt: skip
    return {"data": data, "report": read_report(report), "summary": summary(out)}


def test_import_folder_tree(tree: Path, imported: dict[str, Any]) -> None:
    expected = lfw_images(tree)
    rows = {r["path"]: r for r in imported["report"]}
    assert set(rows) == {*expected, "Bad_Files/notes.jpg", "Bad_Files/mountain.jpg", "me/x.jpg"}
    failed = {p: r["code"] for p, r in rows.items() if r["status"] == "failed"}
    assert failed == {"Bad_Files/notes.jpg": "222203", "Bad_Files/mountain.jpg": "222202",
                      "me/x.jpg": "222018"}  # fmt: skip
    s = imported["summary"]
    assert (s["imported"], s["skipped"], s["failed"]) == (len(expected), 0, 3)
    with FaceLibrary(imported["data"]) as lib:
        faces = all_faces(lib, APP, GROUP)
        want: dict[str, set[str]] = {}
        for path, user in expected.items():
            assert rows[path]["user_id"] == user and rows[path]["status"] == "imported"
            want.setdefault(user, set()).add(rows[path]["face_token"])
        assert faces == want
        assert lib.stats()["groups"] == {f"{APP}/{GROUP}": len(expected)}
        info = lib.user_get(APP, GROUP, "Catherine_Zeta_Jones")[0]
        assert info.user_info == HYPHENATED  # the folder's own name is kept
        crop = lib.face_image(APP, GROUP, rows[f"{HYPHENATED}/{HYPHENATED}_0001.jpg"]["face_token"])
        assert crop is not None and crop[:2] == b"\xff\xd8"
        assert max(decode_image(crop).shape[:2]) <= 400


def test_resume_skips_everything(tree: Path, imported: dict[str, Any]) -> None:
    data = imported["data"]
    out = summary(cli("import", tree, "--appid", APP, "--group", GROUP, "--data", data,
                      "--workers", "2", "--quiet"))  # fmt: skip
    n = imported["summary"]["imported"]
    assert (out["imported"], out["skipped"], out["failed"], out["detected"]) == (0, n, 3, 0)
    report = read_report(Path(out["report"]))
    assert Path(out["report"]).parent == data / "reports"  # the documented default place
    assert sum(r["status"] == "skipped" for r in report) == n
    with FaceLibrary(data) as lib:
        assert lib.stats()["faces"] == n
        assert sum(len(t) for t in all_faces(lib, APP, GROUP).values()) == n


def test_csv_mode(tree: Path, people: list[str], tmp_path: Path) -> None:
    rows = [["path", "user_id", "user_info"]]
    for i, name in enumerate(people[:5]):
        for fname in sorted(os.listdir(tree / name))[:2]:
            rows.append([f"{name}/{fname}", f"person_{i}", f"Person {i}: {name}"])
    rows.append(["Bad_Files/mountain.jpg", "person_9", ""])
    rows.append([f"{people[6]}/missing.jpg", "person_8", ""])
    rows.append([f"{people[7]}/{min(os.listdir(tree / people[7]))}", "bad id!", ""])
    listing = tmp_path / "list.csv"
    with open(listing, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    data = tmp_path / "data"
    out = summary(cli("import", tree, "--csv", listing, "--appid", APP, "--group", "g2",
                      "--data", data, "--workers", "1"))  # fmt: skip
    assert (out["imported"], out["failed"]) == (10, 3)
    codes = {r["path"]: r["code"] for r in read_report(Path(out["report"])) if r["code"]}
    assert codes == {"Bad_Files/mountain.jpg": "222202", f"{people[6]}/missing.jpg": "222203",
                     rows[-1][0]: "222018"}  # fmt: skip
    with FaceLibrary(data) as lib:
        assert sorted(lib.user_list(APP, "g2")) == [f"person_{i}" for i in range(5)]
        assert all(len(lib.face_list(APP, "g2", f"person_{i}")) == 2 for i in range(5))
        assert lib.user_get(APP, "g2", "person_3")[0].user_info == f"Person 3: {people[3]}"


def test_folder_names_that_collide_are_refused(tmp_path: Path) -> None:
    for name in ("Jean-Luc", "Jean_Luc"):
        (tmp_path / "in" / name).mkdir(parents=True)
    out = cli("import", tmp_path / "in", "--appid", APP, "--group", GROUP, "--data",
              tmp_path / "data", check=False)  # fmt: skip
    assert out.returncode != 0
    assert "Jean_Luc: Jean-Luc, Jean_Luc" in out.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was written


def _group_alive(pgid: int) -> bool:
    """Whether any process of the process group still runs (zombies count as gone)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_sigkill_during_import_loses_no_acknowledged_face(
    tree: Path, imported: dict[str, Any], tmp_path: Path
) -> None:
    data, ack = tmp_path / "data", tmp_path / "ack.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "facecore.cli", "import", str(tree), "--appid", APP, "--group",
         GROUP, "--data", str(data), "--workers", "1", "--batch", "4", "--ack-log", str(ack),
         "--quiet"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (ack.exists() and len(ack.read_text().splitlines()) >= 20):
            assert proc.poll() is None, "the import ended before 20 faces were acknowledged"
            assert time.monotonic() < deadline, "no 20 acknowledged faces within 120 s"
            time.sleep(0.01)
        assert proc.poll() is None, "the import finished: nothing was interrupted"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _group_alive(proc.pid):  # the workers notice and exit on their own
            assert time.monotonic() < deadline, "worker processes outlived the killed import"
            time.sleep(0.1)
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    acked = [line.split(",") for line in ack.read_text().splitlines() if line]
    total = imported["summary"]["imported"]
    assert 20 <= len(acked) < total

    engine = Engine(threads=1)
    with FaceLibrary(data) as lib:
        faces = all_faces(lib, APP, GROUP)
        for rel, user, token in acked:
            assert token in faces.get(user, set()), f"acknowledged face {rel} is missing"
        for rel, user, token in acked[:25]:
            top = lib.identify(APP, [GROUP], embed(engine, tree / rel))[0]
            assert (top.user_id, top.face_token) == (user, token)
        stored = sum(len(t) for t in faces.values())
        assert lib.stats()["faces"] == stored == lib.stats()["groups"][f"{APP}/{GROUP}"]

    out = summary(cli("import", tree, "--appid", APP, "--group", GROUP, "--data", data,
                      "--workers", "2"))  # fmt: skip
    assert out["imported"] + out["skipped"] == total and out["failed"] == 3
    assert out["skipped"] >= len(acked)
    with FaceLibrary(data) as lib, FaceLibrary(imported["data"]) as full:
        assert all_faces(lib, APP, GROUP) == all_faces(full, APP, GROUP)
        assert lib.stats() == full.stats()


def test_reindex_keeps_embeddings(tree: Path, imported: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(imported["data"], data)
    rows = [r for r in imported["report"] if r["status"] == "imported"][::6]
    engine = Engine(threads=1)
    originals = {r["face_token"]: embed(engine, tree / r["path"]) for r in rows}
    out = summary(cli("reindex", "--data", data, "--workers", "2", "--quiet"))
    n = imported["summary"]["imported"]
    assert (out["faces"], out["reindexed"], out["failed"]) == (n, n, 0)
    cosines = []
    with FaceLibrary(data) as lib:
        assert lib.stats()["faces"] == n
        for r in rows:
            # identify rescores with the stored fp32 embedding: the score gives back the cosine
            top = lib.identify(APP, [GROUP], originals[r["face_token"]], user_id=r["user_id"])[0]
            assert top.face_token == r["face_token"]
            cosines.append(score_to_similarity(top.score))
    assert min(cosines) > 0.99
    assert min(cosines) < 0.99999, "no embedding changed: reindex did not recompute"


def test_stats_prints_the_library_counts(imported: dict[str, Any]) -> None:
    out = json.loads(cli("stats", "--data", imported["data"]).stdout)
    assert out == {"faces": imported["summary"]["imported"],
                   "groups": {f"{APP}/{GROUP}": imported["summary"]["imported"]}}  # fmt: skip
