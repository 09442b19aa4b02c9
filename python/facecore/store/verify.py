"""FaceLibrary.verify: every record checked against the others and every group's index against
its rows, and the repair of what can be fixed without guessing (docs/operations.md).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from facecore.store import codec
from facecore.store.core import LibraryCore
from facecore.store.ids import TOKEN, is_id
from facecore.store.indexes import GroupState
from facecore.store.kv import WriteBatch

# What FaceLibrary.verify reports, and what its repair does about each (docs/operations.md).
PROBLEMS: dict[str, str] = {
    "malformed_key": "a key of the library's kinds whose fields or value do not parse: deleted",
    "unknown_key": "a key of no kind the library knows: reported only, not the library's to delete",
    "group_missing": "a group's data without its G/ record: the record is written (data kept)",
    "group_record": "a G/ record that is not the group's JSON: rewritten",
    "face_without_row": "an F/ face whose R/ row is missing or names another face: the face "
    "is dropped (its embedding is gone; add the image again)",
    "duplicate_token": "a token claimed by two faces of one group: the one T/ names is kept",
    "token_missing": "a face whose T/ entry is missing or names another row: rewritten from F/",
    "token_dangling": "a T/ entry naming no face: deleted",
    "row_orphan": "an R/ row that no face names (a search could return it): deleted",
    "image_orphan": "an I/ image of no face: deleted",
    "user_without_faces": "a U/ user with no face: deleted, as deleting its last face would",
    "face_without_user": "faces of a user without its U/ record: written, with empty user_info",
    "index_size": "a group's index holds another number of faces than its rows: rebuilt",
    "index_rows": "a group's index holds other rows than its R/ rows: rebuilt",
    "next_row": "a group's next row number is not above its rows: raised (rebuilt)",
    "detected_without_order": "a D/ detected-face token without its E/ eviction entry: written",
    "order_dangling": "an E/ eviction entry of no D/ token: deleted",
}


@dataclass
class VerifyReport:
    """FaceLibrary.verify's answer. `counts`: groups, users, faces, rows, images, detected
    tokens, groups being deleted (after the repair, when one ran). `problems`: how many of each
    PROBLEMS kind were found, `examples` a few keys of each; `remaining`: what a check after the
    repair still found (the same as `problems` without a repair)."""

    counts: dict[str, int]
    problems: dict[str, int]
    examples: dict[str, list[str]]
    repaired: bool
    remaining: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.remaining

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


class Findings:
    """One verify pass's problems, with a few example keys of each kind, and (when fixing) the
    write batch that repairs them."""

    EXAMPLES = 10

    def __init__(self, fix: bool) -> None:
        self.problems: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        self.batch = WriteBatch() if fix else None
        self.rows_changed = False  # an R/ row deleted: the group's index must be rebuilt

    def add(
        self,
        kind: str,
        key: bytes,
        *,
        delete: Sequence[bytes] = (),
        put: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        assert kind in PROBLEMS, kind
        self.problems[kind] = self.problems.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < self.EXAMPLES:
            shown.append(key.decode("utf-8", "backslashreplace"))
        if self.batch is not None:
            for k in delete:
                self.batch.delete(k)
            for k, v in put:  # after the deletes: a key both deleted and put ends up put
                self.batch.put(k, v)
        self.rows_changed |= any(k.startswith(b"R/") for k in delete)

    def merge(self, other: Findings) -> None:
        for kind, n in other.problems.items():
            self.problems[kind] = self.problems.get(kind, 0) + n
            shown = self.examples.setdefault(kind, [])
            shown.extend(other.examples[kind][: self.EXAMPLES - len(shown)])

    def flush(self, write: Callable[[WriteBatch], int]) -> None:
        if self.batch is not None and len(self.batch):
            write(self.batch)
            self.batch = WriteBatch()


class Verify(LibraryCore):
    """verify and repair."""

    def verify(self, repair: bool = False) -> VerifyReport:
        """Check every record against the others and every group's index against its rows
        (PROBLEMS lists what is found, and what a repair does about it); with `repair`, fix what
        can be fixed without guessing (one write batch per group, under its lock), then check
        again: `remaining` is what that second check found.

        Runs beside readers and writers. Each group is screened without its lock; one that
        shows a problem is checked again under its lock, so a write racing the screen is never
        reported; the index check holds the lock (a group's writes wait for a scan of its row
        keys). Groups being deleted are skipped."""
        report = self._verify(repair)
        if repair:
            after = self._verify(False)
            report.counts, report.remaining, report.repaired = after.counts, after.problems, True
        return report

    def _verify(self, fix: bool) -> VerifyReport:
        found = Findings(fix)
        counts = dict.fromkeys(("groups", "users", "faces", "rows", "images"), 0)
        counts["deleting_groups"] = 0
        for appid, group in self._scan_keyspace(found):
            if fix:
                self._adopt(appid, group)
        if fix:
            found.flush(self._write)  # the malformed keys no group owns
        for (appid, group), g in sorted(self._groups.items()):
            if g.deleting:
                counts["deleting_groups"] += 1
                continue
            group_counts = self._verify_group(appid, group, g, found, fix)
            if group_counts is None:  # its deletion began meanwhile
                counts["deleting_groups"] += 1
                continue
            counts["groups"] += 1
            for k, v in group_counts.items():
                counts[k] += v
        counts["detected_tokens"] = self._verify_detected(found, fix)
        return VerifyReport(counts, dict(found.problems), found.examples, False, found.problems)

    def _scan_keyspace(self, found: Findings) -> set[tuple[str, str]]:
        """One pass over the whole store, skipping over each group's range per kind: keys that
        name no valid group or kind, and groups that have data but no G/ record (which no
        operation leaves: a group's G/ record is written with its first data and deleted after
        its last). Returns those groups, each confirmed under the meta lock (a group created or
        deleted while the pass ran is none)."""
        records: set[tuple[str, str]] = set()
        data: set[tuple[str, str]] = set()
        scan = self._store.scan(b"", None)
        while (item := next(scan, None)) is not None:
            key = item[0]
            kind = key[:2]
            skip_to = None
            if kind in (b"D/", b"E/", b"K/"):  # detected tokens: tokens.py; K/: the tools'
                skip_to = key[:1] + b"0"
            elif kind == b"G/":
                ids = codec.group_ids(key)
                if ids is None:
                    found.add("malformed_key", key, delete=[key])
                else:
                    records.add(ids)
            elif kind not in (b"U/", b"F/", b"R/", b"T/", b"I/"):
                found.add("unknown_key", key)
            else:
                ids = codec.data_group(key)
                if ids is None:
                    found.add("malformed_key", key, delete=[key])
                else:
                    data.add(ids)
                    skip_to = codec.end_of(b"/".join(key.split(b"/", 3)[:3]) + b"/")
            if skip_to is not None:
                scan = self._store.scan(skip_to, None)
        orphans = set()
        for appid, group in sorted(data - records):
            with self._meta_lock:  # held by whoever creates a group, and by a deletion's end
                if (
                    (appid, group) not in self._groups
                    and self._get(codec.group_key(appid, group)) is None
                    and any(
                        next(self._iter_prefix(codec.scope(kind, appid, group)), None)
                        for kind in codec.GROUP_KINDS
                    )
                ):
                    orphans.add((appid, group))
                    found.add("group_missing", codec.group_key(appid, group).encode())
        return orphans

    def _adopt(self, appid: str, group: str) -> None:
        """Give data without a G/ record its record back and index it, rather than delete what
        may be the only copy of those faces; the caller checks the group next."""
        with self._shared(appid, [group]), self._meta_lock:
            if (appid, group) in self._groups or self._get(
                codec.group_key(appid, group)
            ) is not None:
                return  # created meanwhile
            batch = WriteBatch()
            self._put_group(batch, appid, group)
            self._write(batch)
            self._groups[(appid, group)] = self._rebuild(appid, group)

    def _verify_group(
        self, appid: str, group: str, g: GroupState, found: Findings, fix: bool
    ) -> dict[str, int] | None:
        """Screen the group's records without its lock; if that shows a problem, check (and fix)
        them again under the lock, where nothing races; then the index, under the lock."""
        screen = Findings(False)
        counts = self._check_records(appid, group, screen)
        confirmed = Findings(fix)
        with self._shared(appid, [group]), g.lock:
            if g.deleting:
                return None
            if screen.problems:
                counts = self._check_records(appid, group, confirmed)
                found.merge(confirmed)
            # The index against the rows as they are, so that a repair reports what verify does.
            rows, missing, last = 0, 0, -1
            for key, _ in self._iter_prefix(codec.scope("R", appid, group)):
                row = codec.row_of(key.rsplit(b"/", 1)[1])
                if row is not None:
                    rows, last = rows + 1, row  # in key order: ascending
                    missing += row not in g.index
            name = f"{appid}/{group}".encode()
            stale = True
            if len(g.index) != rows or g.faces != rows:
                found.add("index_size", name)
            elif missing:  # as many, but not the same
                found.add("index_rows", name)
            else:
                stale = False
            if g.next_row <= last:
                found.add("next_row", name)
                stale = True
            if fix:
                confirmed.flush(self._write)
            if fix and (stale or confirmed.rows_changed):
                fresh = self._rebuild(appid, group)
                g.owners = fresh.owners  # first: a row the index has is found in the owners
                g.index, g.faces = fresh.index, fresh.faces
                g.next_row = max(g.next_row, fresh.next_row)
        return counts

    def _verify_detected(self, found: Findings, fix: bool) -> int:
        """D/ tokens against their E/ eviction entries: screened without the tokens' lock,
        confirmed (and fixed) under it. Returns the number of tokens."""
        screen = Findings(False)
        count = self._check_detected(screen)
        if not screen.problems:
            return count
        tokens = self._tokens
        with tokens.lock:
            confirmed = Findings(fix)
            count = self._check_detected(confirmed)
            found.merge(confirmed)
            if fix:
                confirmed.flush(self._write)
                tokens.count = tokens.stored()
        return count

    def _check_detected(self, found: Findings) -> int:
        width = 8 + 4 * self.dim
        count = 0
        for key, value in self._iter_prefix(b"D/"):
            parts = key.decode("utf-8", "replace").split("/")
            if len(parts) != 3 or not is_id(parts[1]) or not TOKEN.fullmatch(parts[2]):
                found.add("malformed_key", key, delete=[key])
                continue
            if len(value) < width:
                found.add("malformed_key", key, delete=[key])
                continue
            count += 1
            ekey = f"E/{struct.unpack_from('<q', value)[0]:016x}/{parts[1]}/{parts[2]}".encode()
            if self._store.get(ekey) is None:
                found.add("detected_without_order", key, put=[(ekey, b"")])
        for key, _ in self._iter_prefix(b"E/"):
            parts = key.decode("utf-8", "replace").split("/")
            if len(parts) != 4 or codec.row_of(parts[1].encode()) is None:
                found.add("malformed_key", key, delete=[key])
                continue
            d = self._store.get(f"D/{parts[2]}/{parts[3]}".encode())
            if d is None or len(d) < 8 or struct.unpack_from("<q", d)[0] != int(parts[1], 16):
                found.add("order_dangling", key, delete=[key])
        return count

    def _check_records(self, appid: str, group: str, found: Findings) -> dict[str, int]:
        """Every record of one group against the others (docs/storage.md): G/, then F/ merged
        with U/ (both in user order), R/, T/ and I/, each by a prefix scan with point reads.
        Memory stays constant whatever the group's size. Returns the group's counts."""
        width = 4 * self.dim
        counts = dict.fromkeys(("users", "faces", "rows", "images"), 0)

        gkey = codec.group_key(appid, group).encode()
        graw = self._store.get(gkey)
        if graw is None:
            found.add("group_missing", gkey, put=[(gkey, self._group_value({}))])
        else:
            meta = codec.group_meta(graw)
            if not isinstance(meta.get("ctime"), int) or meta.get("deleting") is not False:
                found.add("group_record", gkey, put=[(gkey, self._group_value(meta))])

        def good(user: bytes, token: bytes, row: int) -> bool:
            """Whether F/ user/token names `row` and R/ row names that face back."""
            f = self._store.get(codec.scope("F", appid, group) + user + b"/" + token)
            if f is None or len(f) != codec.FACE.size or codec.FACE.unpack_from(f)[0] != row:
                return False
            r = self._store.get(codec.row_key(appid, group, row).encode())
            return r is not None and r[width:] == bytes.fromhex(token.decode()) + user

        # F/ merged with U/: a face needs its row and its user record; a user needs a face.
        claimed: dict[bytes, tuple[int, bytes]] = {}  # tokens whose T/ this pass rewrites
        uprefix = codec.scope("U", appid, group)
        users = self._iter_prefix(uprefix)
        pending = next(users, None)

        def users_before(user: bytes | None) -> Iterator[tuple[bytes, bytes]]:
            """The U/ records up to `user` (all of them for None), consumed in order."""
            nonlocal pending
            while pending is not None and (user is None or pending[0][len(uprefix) :] <= user):
                yield pending[0][len(uprefix) :], pending[1]
                pending = next(users, None)

        def user_done(user: bytes, kept: int, first_ctime: int, record: bytes | None) -> None:
            ukey = uprefix + user
            if kept == 0 and record is not None:
                found.add("user_without_faces", ukey, delete=[ukey])
            elif kept and not codec.user_meta_ok(record):
                value = json.dumps({"user_info": "", "ctime": first_ctime}).encode()
                found.add("face_without_user", ukey, put=[(ukey, value)])
            if kept:
                counts["users"] += 1

        fprefix = codec.scope("F", appid, group)
        current: bytes | None = None
        kept, first_ctime, record = 0, 0, None
        for key, value in self._iter_prefix(fprefix):
            rest = key[len(fprefix) :].split(b"/")
            if (
                len(rest) != 2
                or not is_id(rest[0].decode("utf-8", "replace"))
                or not TOKEN.fullmatch(rest[1].decode("utf-8", "replace"))
                or len(value) != codec.FACE.size
            ):
                found.add("malformed_key", key, delete=[key])
                continue
            user, token = rest
            if user != current:
                if current is not None:
                    user_done(current, kept, first_ctime, record)
                record = None
                for name, raw in users_before(user):
                    if name == user:
                        record = raw
                    else:  # a user record with no face at all
                        user_done(name, 0, 0, raw)
                current, kept, first_ctime = user, 0, 0
            row, ctime = (int(v) for v in codec.FACE.unpack_from(value)[:2])
            rkey = codec.row_key(appid, group, row).encode()
            r = self._store.get(rkey)
            tbin = bytes.fromhex(token.decode())
            if r is None or r[width:] != tbin + user:
                found.add("face_without_row", key, delete=[key])
                continue
            tkey = codec.scope("T", appid, group) + token
            t = self._store.get(tkey)
            mine = codec.ROW.pack(row) + user
            if t != mine:
                owner = claimed.get(token)
                if owner is None and t is not None and len(t) > codec.ROW.size:
                    other = (int(codec.ROW.unpack_from(t)[0]), t[codec.ROW.size :])
                    if good(other[1], token, other[0]):
                        owner = other
                if owner is not None:  # another user's face has this token: keep that one
                    found.add("duplicate_token", key, delete=[key, rkey])
                    continue
                found.add("token_missing", tkey, put=[(tkey, mine)])
                claimed[token] = (row, user)
            kept += 1
            counts["faces"] += 1
            first_ctime = ctime if kept == 1 else min(first_ctime, ctime)
        if current is not None:
            user_done(current, kept, first_ctime, record)
        for name, raw in users_before(None):
            user_done(name, 0, 0, raw)

        # R/: a row needs its face (a search would otherwise return a face that is not there).
        rprefix = codec.scope("R", appid, group)
        for key, value in self._iter_prefix(rprefix):
            number = codec.row_of(key[len(rprefix) :])
            user = value[width + 16 :]
            if (
                number is None
                or len(value) <= width + 16
                or not is_id(user.decode("utf-8", "replace"))
            ):
                found.add("malformed_key", key, delete=[key])
                continue
            counts["rows"] += 1
            f = self._store.get(fprefix + user + b"/" + value[width : width + 16].hex().encode())
            if f is None or len(f) != codec.FACE.size or codec.FACE.unpack_from(f)[0] != number:
                found.add("row_orphan", key, delete=[key])

        # T/: an entry needs the face it names (unless this pass rewrites it).
        tprefix = codec.scope("T", appid, group)
        for key, value in self._iter_prefix(tprefix):
            token = key[len(tprefix) :]
            if token in claimed:
                continue
            if (
                not TOKEN.fullmatch(token.decode("utf-8", "replace"))
                or len(value) <= codec.ROW.size
            ):
                found.add("malformed_key", key, delete=[key])
                continue
            if not good(value[codec.ROW.size :], token, int(codec.ROW.unpack_from(value)[0])):
                found.add("token_dangling", key, delete=[key])

        # I/: an image needs its face.
        iprefix = codec.scope("I", appid, group)
        for key, _ in self._iter_prefix(iprefix):
            token = key[len(iprefix) :]
            if not TOKEN.fullmatch(token.decode("utf-8", "replace")):
                found.add("malformed_key", key, delete=[key])
                continue
            t = None if token in claimed else self._store.get(tprefix + token)
            if token not in claimed and (
                t is None
                or len(t) <= codec.ROW.size
                or not good(t[codec.ROW.size :], token, int(codec.ROW.unpack_from(t)[0]))
            ):
                found.add("image_orphan", key, delete=[key])
                continue
            counts["images"] += 1
        return counts

    @staticmethod
    def _group_value(meta: dict[str, Any]) -> bytes:
        ctime = meta.get("ctime")
        return codec.group_value(ctime if isinstance(ctime, int) else None)
