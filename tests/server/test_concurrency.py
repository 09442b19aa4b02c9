"""Many clients against one live server at once, with real LFW faces.

16 client threads first detect their images (BASE64, all at once: the model path and its dynamic
batching under load), then add, identify, delete and list on shared groups with the FACE_TOKENs
they got (cheap for the CPU, the library and the admission gate see the same concurrency), and race
to add one shared face. Afterwards the server's state must equal what the clients were told:
every face whose add succeeded and was not deleted is listed and is its user's exact match (score
~100), deleted faces and users are gone, counts agree, and no answer had an unexpected code. The
same invariants hold again after the server is restarted on the same --data.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LFW, Client, b64, start_server

CLIENTS = 16
GROUPS = ["conc_g0", "conc_g1", "conc_g2"]
RACE_GROUP = "conc_race"
APPID = "conc_app"


@dataclass
class Person:
    """One LFW identity: two of its images and the tokens face/detect gave them."""

    name: str
    images: list[Path]
    tokens: list[str] = field(default_factory=list)


@dataclass
class Book:
    """What the clients were told: faces that stand, faces and users deleted, codes received."""

    faces: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (group, user) -> tokens
    deleted_faces: set[tuple[str, str, str]] = field(default_factory=set)  # (group, user, token)
    deleted_users: set[tuple[str, str]] = field(default_factory=set)
    race_winners: list[str] = field(default_factory=list)
    codes: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def people(n: int) -> list[Person]:
    """n people with at least two LFW images, in a fixed order."""
    out = []
    for folder in sorted(LFW.iterdir()):
        images = sorted(folder.glob("*.jpg"))
        if len(images) >= 2:
            out.append(Person(folder.name, images[:2]))
    assert len(out) >= n
    return out[:n]


class Caller:
    """One client thread's HTTP session; every answer's code is checked against the allowed ones."""

    def __init__(self, server: Client, book: Book) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=120)
        self.book = book

    def close(self) -> None:
        self.http.close()

    def post(self, route: str, body: dict[str, Any], allowed: set[int]) -> dict[str, Any]:
        r = self.http.post(f"/face-api/v3/{route}", params={"appid": APPID}, json=body)
        assert r.status_code == 200, r.text  # never a 5xx (nor anything but 200)
        env: dict[str, Any] = r.json()
        code = env["error_code"]
        assert len(str(env["log_id"])) == 13 and (code == 0 or env["result"] is None)
        with self.book.lock:
            self.book.codes[(route, code)] += 1
            if code not in allowed:
                self.book.unexpected.append((route, env))
        return env


def in_threads(n: int, work: Callable[[int], None]) -> None:
    """Run work(i) for i in range(n) on n threads started together; re-raise the first error."""
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as e:  # noqa: BLE001 - collected, raised after the join
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def detect_all(server: Client, persons: list[Person], book: Book) -> None:
    """Every client detects its people's two images at once; tokens go into `persons`."""

    def work(i: int) -> None:
        caller = Caller(server, book)
        try:
            for p in persons[i::CLIENTS]:
                for path in p.images:
                    env = caller.post(
                        "face/detect",
                        {"image": b64(path), "image_type": "BASE64"},
                        {0},
                    )
                    if env["error_code"] == 0:
                        assert env["result"]["face_num"] == 1
                        p.tokens.append(env["result"]["face_list"][0]["face_token"])
        finally:
            caller.close()

    in_threads(CLIENTS, work)


def mutate(server: Client, persons: list[Person], race_token: str, book: Book) -> None:
    """Each client owns two users (two faces each) in a group it shares with other clients."""

    def work(i: int) -> None:
        caller = Caller(server, book)
        group = GROUPS[i % len(GROUPS)]
        a, b = persons[2 * i], persons[2 * i + 1]
        ua, ub = f"u{i}_a", f"u{i}_b"
        try:
            # The race: every client adds the same face to one group; exactly one may win.
            env = caller.post(
                "face/add",
                {
                    "image": race_token,
                    "image_type": "FACE_TOKEN",
                    "group_id": RACE_GROUP,
                    "user_id": f"racer{i}",
                },
                {0, 223105},
            )
            if env["error_code"] == 0:
                with book.lock:
                    book.race_winners.append(f"racer{i}")
            for user, person in ((ua, a), (ub, b)):
                for token in person.tokens:
                    env = caller.post(
                        "face/add",
                        {
                            "image": token,
                            "image_type": "FACE_TOKEN",
                            "group_id": group,
                            "user_id": user,
                            "user_info": f"{person.name} by {i}",
                        },
                        {0},
                    )
                    if env["error_code"] == 0:
                        with book.lock:
                            book.faces.setdefault((group, user), set()).add(token)
            # Identify while the other clients write: own faces are stable, so exact matches.
            for user, person in ((ua, a), (ub, b)):
                env = caller.post(
                    "face/identify",
                    {"image": person.tokens[0], "image_type": "FACE_TOKEN", "group_id_list": group},
                    {0},
                )
                top = env["result"]["user_list"][0]
                assert (top["user_id"], top["group_id"]) == (user, group), env
                assert top["score"] > 99.9, env
            # A BASE64 identify (the model path) of a's second image finds a.
            env = caller.post(
                "face/identify",
                {"image": b64(a.images[1]), "image_type": "BASE64", "group_id_list": group},
                {0},
            )
            assert env["result"]["user_list"][0]["user_id"] == ua, env
            # Delete a's second face (twice: the second must be 223106), and all of b.
            gone = a.tokens[1]
            caller.post("face/delete", {"group_id": group, "user_id": ua, "face_token": gone}, {0})
            caller.post(
                "face/delete", {"group_id": group, "user_id": ua, "face_token": gone}, {223106}
            )
            caller.post("user/delete", {"group_id": group, "user_id": ub}, {0})
            caller.post("user/delete", {"group_id": group, "user_id": ub}, {223103})
            with book.lock:
                book.faces[(group, ua)].discard(gone)
                book.deleted_faces.add((group, ua, gone))
                del book.faces[(group, ub)]
                book.deleted_users.add((group, ub))
            env = caller.post("group/list", {}, {0})
            assert {group, RACE_GROUP} <= set(env["result"]["group_id_list"]), env
        finally:
            caller.close()

    in_threads(CLIENTS, work)


def check_state(server: Client, book: Book, race_token: str) -> None:
    """The server's library equals the book."""
    ok = server.ok
    faces = dict(book.faces)
    faces[(RACE_GROUP, book.race_winners[0])] = {race_token}
    assert set(ok("group/list", {}, APPID)["group_id_list"]) == {*GROUPS, RACE_GROUP}
    for group in [*GROUPS, RACE_GROUP]:
        users = set(ok("user/list", {"group_id": group}, APPID)["user_id_list"])
        assert users == {u for g, u in faces if g == group}, group
    for (group, user), tokens in faces.items():
        listed = ok("face/list", {"group_id": group, "user_id": user}, APPID)["face_list"]
        assert {f["face_token"] for f in listed} == tokens, (group, user)
        for token in tokens:
            found = ok(
                "face/identify",
                {"image": token, "image_type": "FACE_TOKEN", "group_id_list": group},
                APPID,
            )["user_list"][0]
            assert (found["group_id"], found["user_id"]) == (group, user)
            assert found["score"] > 99.9
    for group, user, token in book.deleted_faces:
        env = server.post(
            "face/delete", {"group_id": group, "user_id": user, "face_token": token}, APPID
        )
        assert env["error_code"] == 223106, env
        # Its user still has its other face (the same person), but no exact match any more.
        found = ok(
            "face/identify",
            {"image": token, "image_type": "FACE_TOKEN", "group_id_list": group, "user_id": user},
            APPID,
        )["user_list"][0]
        assert found["user_id"] == user and found["score"] < 99.9, found
    for group, user in book.deleted_users:
        env = server.post("face/list", {"group_id": group, "user_id": user}, APPID)
        assert env["error_code"] == 223103, env
        env = server.post("user/get", {"group_id": "@ALL", "user_id": user}, APPID)
        assert env["error_code"] == 223103, env
    health = httpx.get(server.url + "/health", timeout=30).json()
    assert health["faces"] == sum(len(t) for t in faces.values())


@pytest.mark.slow
def test_many_clients_then_restart(tmp_path: Path) -> None:
    persons = people(2 * CLIENTS + 1)
    book = Book()
    # --queue-timeout: on a loaded test machine, waiting is fine; "busy" is test_operations' topic.
    flags = ("--queue-timeout", "120", "--batch-wait-ms", "2")
    server = start_server(tmp_path, *flags)
    try:
        detect_all(server, persons, book)
        assert not book.unexpected, book.unexpected
        assert all(len(p.tokens) == 2 for p in persons)
        assert len({t for p in persons for t in p.tokens}) == 2 * len(persons)  # all distinct
        race_token = persons[-1].tokens[0]
        mutate(server, persons, race_token, book)
        assert not book.unexpected, book.unexpected
        assert len(book.race_winners) == 1, book.race_winners
        assert book.codes[("face/add", 223105)] == CLIENTS - 1
        check_state(server, book, race_token)
    finally:
        assert server.stop() == 0, server.server_log()[-3000:]
    first_log = server.server_log()  # the restart writes the same file
    restarted = start_server(tmp_path, *flags)
    try:
        assert restarted.data == server.data
        check_state(restarted, book, race_token)
    finally:
        assert restarted.stop() == 0, restarted.server_log()[-3000:]
    for log in (first_log, restarted.server_log()):
        assert "Traceback" not in log and "internal error" not in log, log[-3000:]
