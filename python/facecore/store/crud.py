"""The library's operations on its records: groups, faces, users, and the tools' helpers
(metadata, every face listed, a face's embedding replaced, statistics).

Each write reads what it needs and writes one batch under its groups' locks (core.py), then
changes the in-memory index: a search sees all of an operation or none of it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facecore.errors import (
    DstGroupNotFound,
    FaceCoreError,
    FaceExists,
    FaceNotFound,
    GroupDeleting,
    GroupExists,
    GroupNotFound,
    InvalidArgument,
    UserNotFound,
)
from facecore.store import codec
from facecore.store.core import LibraryCore
from facecore.store.ids import (
    TOKEN,
    check_appid,
    check_group,
    check_id,
    check_page,
    check_token,
    check_user,
    check_user_info,
    is_id,
)
from facecore.store.kv import WriteBatch


def _is_token(value: object) -> bool:
    return isinstance(value, str) and TOKEN.fullmatch(value) is not None


@dataclass(frozen=True)
class NewFace:
    face_token: str
    embedding: np.ndarray
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    image: bytes | None = None


@dataclass(frozen=True)
class FaceInfo:
    face_token: str
    ctime: int


@dataclass(frozen=True)
class UserInfo:
    group_id: str
    user_id: str
    user_info: str
    ctime: int


class Crud(LibraryCore):
    """Groups, faces, users: the library routes' operations."""

    # ------------------------------------------------------------------ groups

    def group_add(self, appid: str, group_id: str) -> None:
        appid, group = check_appid(appid), check_group(group_id)
        with self._shared(appid, [group]), self._meta_lock:
            g = self._groups.get((appid, group))
            if g is not None:
                if g.deleting:
                    raise GroupDeleting(f"group {group!r} is being deleted")
                raise GroupExists(f"group {group!r} already exists")
            batch = WriteBatch()
            self._put_group(batch, appid, group)
            self._write(batch)
            self._groups[(appid, group)] = self._new_group()

    def group_list(self, appid: str, start: int = 0, length: int = 100) -> list[str]:
        appid = check_appid(appid)
        start, length = check_page(start, length)
        self._fresh()
        names = sorted(
            grp for (a, grp), g in list(self._groups.items()) if a == appid and not g.deleting
        )
        return names[start : start + length]

    def group_delete(self, appid: str, group_id: str) -> None:
        """Mark the group deleted and remove its data in the background (GroupDeleting until done)."""
        appid, group = check_appid(appid), check_group(group_id)
        with self._shared(appid, [group]), self._meta_lock:
            g = self._group(appid, group)
            with g.lock:
                key = codec.group_key(appid, group)
                meta = json.loads(self._must(key))
                meta["deleting"] = True
                batch = WriteBatch()
                batch.put(key.encode(), json.dumps(meta).encode())
                self._write(batch)
                g.deleting = True
        self._start_delete(appid, group)

    # ------------------------------------------------------------------ faces

    def face_add(
        self,
        appid: str,
        group_id: str,
        user_id: str,
        face: NewFace,
        user_info: str | None = None,
    ) -> FaceInfo:
        """Add a face; creates the group and the user when missing. FaceExists if already there."""
        result = self.face_add_many(appid, group_id, [(user_id, face, user_info)])[0]
        if isinstance(result, FaceCoreError):
            raise result
        return result

    def face_add_many(
        self, appid: str, group_id: str, items: Sequence[tuple[str, NewFace, str | None]]
    ) -> list[FaceInfo | FaceCoreError]:
        """Add faces to one group in one write batch; a bad item is reported, not raised."""
        appid, group = check_appid(appid), check_group(group_id)
        with self._creating(appid, group) as (g, new_group):
            batch = WriteBatch()
            if new_group:
                self._put_group(batch, appid, group)
            out: list[FaceInfo | FaceCoreError] = []
            now = int(time.time())
            row = g.next_row
            rows: list[int] = []
            vecs: list[bytes] = []
            seen: set[str] = set()
            # What the items' tokens and users have in the store, in two multi-gets (a shared
            # store: two round trips, not two per item).
            taken, stored = self._prefetch(appid, group, items) if not new_group else ({}, {})
            users: dict[str, dict[str, Any] | None] = {}  # staged user records
            for user_id, face, user_info in items:
                try:
                    user = check_user(user_id)
                    info = check_user_info(user_info)
                    token = check_token(face.face_token)
                    emb = self._embedding(face.embedding)
                    if token in seen or taken.get(token) is not None:
                        raise FaceExists(f"face {token} already exists in group {group!r}")
                except FaceCoreError as e:
                    out.append(e)
                    continue
                seen.add(token)
                if user not in users:
                    raw = stored.get(user)
                    users[user] = json.loads(raw) if raw is not None else None
                meta = users[user]
                if meta is None or info is not None:
                    meta = meta or {"user_info": "", "ctime": now}
                    if info is not None:
                        meta["user_info"] = info
                    users[user] = meta
                    batch.put(
                        codec.user_key(appid, group, user).encode(), json.dumps(meta).encode()
                    )
                self._put_face(batch, appid, group, user, row, now, face)
                rows.append(row)
                vecs.append(emb.tobytes())
                out.append(FaceInfo(token, now))
                row += 1
            if rows:  # nothing is written, not even a new group, when every item failed
                self._write(batch)
                if new_group:
                    self._groups[(appid, group)] = g
                self._add_rows(g, rows, vecs)
        return out

    def _prefetch(
        self, appid: str, group: str, items: Sequence[tuple[str, NewFace, str | None]]
    ) -> tuple[dict[str, bytes | None], dict[str, bytes | None]]:
        """The T/ values of the items' well-formed tokens and the U/ values of their well-formed
        users (None: absent), each by one multi-get."""
        tokens = list(dict.fromkeys(f.face_token for _, f, _ in items if _is_token(f.face_token)))
        names = list(dict.fromkeys(u for u, _, _ in items if is_id(u)))
        t = self._store.multi_get([codec.token_key(appid, group, x).encode() for x in tokens])
        u = self._store.multi_get([codec.user_key(appid, group, x).encode() for x in names])
        return dict(zip(tokens, t)), dict(zip(names, u))

    def face_update(
        self,
        appid: str,
        group_id: str,
        user_id: str,
        face: NewFace,
        user_info: str | None = None,
        *,
        create: bool = False,
    ) -> FaceInfo:
        """Replace all of the user's faces in the group with `face` (UserNotFound if no such user).
        `create` (action_type=REPLACE): a missing group or user is registered instead, in the same
        step, so two concurrent REPLACEs of a new user leave one face, not both."""
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        info = check_user_info(user_info)
        token = check_token(face.face_token)
        emb = self._embedding(face.embedding)
        with contextlib.ExitStack() as stack:
            if create:
                g, new_group = stack.enter_context(self._creating(appid, group))
            else:
                g, new_group = (
                    stack.enter_context(self._writing(appid, (group, GroupNotFound)))[0],
                    False,
                )
            ukey = codec.user_key(appid, group, user)
            raw = None if new_group else self._get(ukey)
            if raw is None and not create:
                raise UserNotFound(f"user {user!r} does not exist in group {group!r}")
            owner = None if new_group else self._token_owner(appid, group, token)
            if owner is not None and owner[1] != user:
                raise FaceExists(f"face {token} already belongs to another user of {group!r}")
            now = int(time.time())
            old = self._user_faces(appid, group, user) if raw is not None else []
            batch = WriteBatch()
            if new_group:
                self._put_group(batch, appid, group)
            for t, r, _ in old:
                self._delete_face(batch, appid, group, user, t, r)
            row = g.next_row
            self._put_face(batch, appid, group, user, row, now, face)
            if raw is None or info is not None:
                meta = json.loads(raw) if raw is not None else {"user_info": "", "ctime": now}
                if info is not None:
                    meta["user_info"] = info
                batch.put(ukey.encode(), json.dumps(meta).encode())
            self._write(batch)
            if new_group:
                self._groups[(appid, group)] = g
            self._add_rows(g, [row], [emb.tobytes()])
            if old:
                g.index.remove(np.array([r for _, r, _ in old], np.int64))
                g.faces -= len(old)
        return FaceInfo(token, now)

    def face_delete(self, appid: str, group_id: str, user_id: str, face_token: str) -> None:
        """Remove one face of the user (FaceNotFound if not the user's); the last face takes the user."""
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        token = check_token(face_token)
        with self._writing(appid, (group, GroupNotFound)) as (g,):
            owner = self._token_owner(appid, group, token)
            if owner is None or owner[1] != user:
                raise FaceNotFound(f"face {token} of user {user!r} does not exist in {group!r}")
            row = owner[0]
            batch = WriteBatch()
            self._delete_face(batch, appid, group, user, token, row)
            if len(self._user_faces(appid, group, user)) == 1:
                batch.delete(codec.user_key(appid, group, user).encode())
            self._write(batch)
            g.index.remove(np.array([row], np.int64))
            g.faces -= 1

    def face_list(self, appid: str, group_id: str, user_id: str) -> list[FaceInfo]:
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        self._fresh()
        g = self._group(appid, group)
        faces = self._user_faces(appid, group, user)  # one iterator: one consistent view
        self._still(g, group)
        if not faces:
            raise UserNotFound(f"user {user!r} does not exist in group {group!r}")
        return _listed(faces)

    def face_image(self, appid: str, group_id: str, face_token: str) -> bytes | None:
        appid, group, token = check_appid(appid), check_group(group_id), check_token(face_token)
        self._fresh()
        g = self._group(appid, group)
        image = self._get(codec.image_key(appid, group, token))
        self._still(g, group)
        return image

    # ------------------------------------------------------------------ users

    def user_get(self, appid: str, group_id: str, user_id: str) -> list[UserInfo]:
        """The user in one group, or in every group of the appid with group_id "@ALL"."""
        appid, user = check_appid(appid), check_user(user_id)
        self._fresh()
        if group_id == "@ALL":
            groups = sorted(
                (grp, g)
                for (a, grp), g in list(self._groups.items())
                if a == appid and not g.deleting
            )
        else:
            group = check_group(group_id)
            groups = [(group, self._group(appid, group))]
        found = [(grp, g, self._get(codec.user_key(appid, grp, user))) for grp, g in groups]
        if group_id != "@ALL":
            self._still(groups[0][1], groups[0][0])
        out = []
        for group, g, raw in found:
            if raw is not None and not g.deleting:  # a group whose deletion began is gone
                meta = json.loads(raw)
                out.append(UserInfo(group, user, meta["user_info"], meta["ctime"]))
        if not out:
            raise UserNotFound(f"user {user!r} does not exist")
        return out

    def user_list(self, appid: str, group_id: str, start: int = 0, length: int = 100) -> list[str]:
        """User ids of the group in sorted order, `length` of them from `start`."""
        appid, group = check_appid(appid), check_group(group_id)
        start, length = check_page(start, length)
        self._fresh()
        g = self._group(appid, group)
        prefix = codec.scope("U", appid, group)
        out: list[str] = []
        for i, (key, _) in enumerate(self._iter_prefix(prefix)):
            if i >= start:
                out.append(key[len(prefix) :].decode())
                if len(out) == length:
                    break
        self._still(g, group)
        return out

    def user_page(
        self, appid: str, group_id: str, start: int = 0, length: int = 100
    ) -> list[tuple[UserInfo, list[FaceInfo]]]:
        """A page of the group's users as user_list pages them, each with its record (user_get)
        and its faces (face_list): one freshness check and one scan of the page's U/ records,
        then one of each user's faces, where user_list + user_get + face_list take four round
        trips a user on a shared store. A user deleted between the two scans is left out."""
        appid, group = check_appid(appid), check_group(group_id)
        start, length = check_page(start, length)
        self._fresh()
        g = self._group(appid, group)
        prefix = codec.scope("U", appid, group)
        records: list[tuple[str, bytes]] = []
        for i, (key, value) in enumerate(self._iter_prefix(prefix)):
            if i >= start:
                records.append((key[len(prefix) :].decode(), value))
                if len(records) == length:
                    break
        out = []
        for user, raw in records:
            faces = self._user_faces(appid, group, user)
            if faces:
                meta = json.loads(raw)
                info = UserInfo(group, user, meta["user_info"], meta["ctime"])
                out.append((info, _listed(faces)))
        self._still(g, group)
        return out

    def user_copy(self, appid: str, user_id: str, src_group_id: str, dst_group_id: str) -> None:
        """Copy the user's faces and user_info from one group to another that exists (DstGroupNotFound).

        All or nothing, one write batch, with both groups locked: it cannot interleave with an
        add, delete or another copy on either group. Faces the user already has in the
        destination are skipped, so copying again (or concurrently) succeeds and changes nothing
        but user_info. A face that belongs to another user of the destination answers FaceExists
        (naming that user) and nothing is copied: one face cannot be two people, and a copy that
        left the user without it would answer success for a user who cannot be found by that
        face. The destination user keeps its other faces and its ctime; its user_info becomes
        the source's. Copying a user into its own group changes nothing."""
        appid, user = check_appid(appid), check_user(user_id)
        src, dst = check_group(src_group_id), check_group(dst_group_id)
        with self._writing(appid, (src, GroupNotFound), (dst, DstGroupNotFound)) as (_, gd):
            raw = self._get(codec.user_key(appid, src, user))
            faces = self._user_faces(appid, src, user)
            if raw is None or not faces:
                raise UserNotFound(f"user {user!r} does not exist in group {src!r}")
            if src == dst:
                return
            info = json.loads(raw)["user_info"]
            now = int(time.time())
            batch = WriteBatch()
            row = gd.next_row
            rows: list[int] = []
            vecs: list[bytes] = []
            for token, src_row, _ in faces:
                owner = self._token_owner(appid, dst, token)
                if owner is not None and owner[1] == user:
                    continue  # already there
                if owner is not None:
                    raise FaceExists(
                        f"face {token} of user {user!r} already belongs to user {owner[1]!r} "
                        f"of group {dst!r}; nothing was copied",
                    )
                rec = self._must(codec.row_key(appid, src, src_row))
                emb = np.frombuffer(rec, np.float32, self.dim).copy()
                fkey = codec.face_key(appid, src, user, token)
                x1, y1, x2, y2 = codec.FACE.unpack_from(self._must(fkey))[2:]
                image = self._get(codec.image_key(appid, src, token))
                face = NewFace(token, emb, (x1, y1, x2, y2), image)
                self._put_face(batch, appid, dst, user, row, now, face)
                rows.append(row)
                vecs.append(emb.tobytes())
                row += 1
            ukey = codec.user_key(appid, dst, user)
            raw_dst = self._get(ukey)
            meta = json.loads(raw_dst) if raw_dst is not None else {"ctime": now}
            if rows or meta.get("user_info") != info:
                meta["user_info"] = info
                batch.put(ukey.encode(), json.dumps(meta).encode())
                self._write(batch)
            if rows:
                self._add_rows(gd, rows, vecs)

    def user_delete(self, appid: str, group_id: str, user_id: str) -> None:
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        with self._writing(appid, (group, GroupNotFound)) as (g,):
            faces = self._user_faces(appid, group, user)
            if not faces:
                raise UserNotFound(f"user {user!r} does not exist in group {group!r}")
            batch = WriteBatch()
            for t, r, _ in faces:
                self._delete_face(batch, appid, group, user, t, r)
            batch.delete(codec.user_key(appid, group, user).encode())
            self._write(batch)
            g.index.remove(np.array([r for _, r, _ in faces], np.int64))
            g.faces -= len(faces)

    # ------------------------------------------------------------------ tools

    def kv_get(self, namespace: str, key: str) -> bytes | None:
        return self._get(f"K/{check_id(namespace, 'namespace', 64, InvalidArgument)}/{key}")

    def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        check_id(namespace, "namespace", 64, InvalidArgument)
        batch = WriteBatch()
        batch.put(f"K/{namespace}/{key}".encode(), bytes(value))
        self._write(batch)

    def kv_update(self, namespace: str, key: str, update: Callable[[bytes | None], bytes]) -> bytes:
        """Read, change and write one metadata value as one step, atomic against every other
        update of it (a shared store: of every instance). `update` gets the value (None when
        missing) and returns the new one; an exception it raises writes nothing."""
        name = f"K/{check_id(namespace, 'namespace', 64, InvalidArgument)}/{key}"
        with self._kv_lock, self._store.locked([name]):
            value = update(self._get(name))
            batch = WriteBatch()
            batch.put(name.encode(), bytes(value))
            self._write(batch)
            return value

    def iter_faces(self, appid: str | None = None) -> Iterator[tuple[str, str, str, str]]:
        """(appid, group, user, token) of every stored face (of one appid)."""
        prefix = b"F/" if appid is None else f"F/{check_appid(appid)}/".encode()
        for key, _ in self._iter_prefix(prefix):
            _, a, group, user, token = key.decode().split("/")
            yield a, group, user, token

    def set_embedding(
        self, appid: str, group_id: str, face_token: str, embedding: np.ndarray
    ) -> None:
        """Replace a stored face's embedding (facecore reindex)."""
        appid, group, token = check_appid(appid), check_group(group_id), check_token(face_token)
        emb = self._embedding(embedding)
        # Under the lock with `deleting` checked: a write after the deletion's range deletes
        # would leave a row that a later group of the same name would take for its own.
        with self._writing(appid, (group, GroupNotFound)) as (g,):
            owner = self._token_owner(appid, group, token)
            if owner is None:
                raise FaceNotFound(f"face {token} does not exist in {group!r}")
            row = owner[0]
            key = codec.row_key(appid, group, row)
            value = bytearray(self._must(key))
            value[: 4 * self.dim] = emb.tobytes()
            batch = WriteBatch()
            batch.put(key.encode(), bytes(value))
            self._write(batch)
            g.index.remove(np.array([row], np.int64))
            g.index.add(np.array([row], np.int64), emb[None])

    def stats(self) -> dict[str, Any]:
        """Faces in total and per "appid/group"."""
        self._fresh()
        groups = {
            f"{a}/{grp}": g.faces for (a, grp), g in sorted(self._groups.items()) if not g.deleting
        }
        return {"faces": sum(groups.values()), "groups": groups}


def _listed(faces: list[tuple[str, int, int]]) -> list[FaceInfo]:
    """_user_faces' (token, row, ctime) as face_list answers them: oldest first."""
    return sorted((FaceInfo(t, c) for t, _, c in faces), key=lambda f: (f.ctime, f.face_token))
