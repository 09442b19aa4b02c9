"""identify: the users whose faces best match an embedding, over up to 10 groups.

Two steps per group: the int8 index gives candidates (4 x max_user_num faces, at least 16,
widened while fewer distinct users than asked for are above the threshold); the exact score comes
from the candidates' R/ records (fp32 embedding, token, user), read in one multi-get. Searches
take no lock; a hit whose record was deleted after the scan is dropped.

A shared store that is down: the candidates' tokens and users, and the users' user_info, come from
the instance's memory (owners.py), and each score is the int8 index's (within about 0.01 of the
exact cosine), so identify goes on answering while writes answer 222201.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from facecore.errors import (
    BadGroupIdList,
    BadMatchThreshold,
    BadMaxUserNum,
    FaceCoreError,
    InvalidArgument,
    NoMatch,
    StoreUnavailable,
    TooManyGroups,
)
from facecore.score import score_to_similarity, similarity_to_score
from facecore.store import codec
from facecore.store.core import LibraryCore
from facecore.store.ids import check_appid, check_group, check_user
from facecore.store.indexes import GroupState

MAX_GROUPS_PER_SEARCH = 10


@dataclass(frozen=True)
class Match:
    group_id: str
    user_id: str
    user_info: str
    score: float
    face_token: str


class Identify(LibraryCore):
    """1:N search over the groups' indexes."""

    def identify(
        self,
        appid: str,
        group_ids: Sequence[str],
        embedding: np.ndarray,
        user_id: str | None = None,
        match_threshold: float = 0.0,
        max_user_num: int = 1,
    ) -> list[Match]:
        """Users best matching `embedding` (best face per user, score descending); NoMatch if none
        reaches `match_threshold`."""
        result = self.identify_many(
            appid, group_ids, np.asarray(embedding)[None], user_id, match_threshold, max_user_num
        )[0]
        if isinstance(result, FaceCoreError):
            raise result
        return result

    def identify_many(
        self,
        appid: str,
        group_ids: Sequence[str],
        embeddings: np.ndarray,
        user_id: str | None = None,
        match_threshold: float = 0.0,
        max_user_num: int = 1,
    ) -> list[list[Match] | FaceCoreError]:
        """identify for each row of `embeddings`, one scan per group for all of them."""
        appid = check_appid(appid)
        if isinstance(group_ids, str) or not isinstance(group_ids, Sequence) or not group_ids:
            raise BadGroupIdList("group_id_list must be a non-empty list of group ids")
        if len(group_ids) > MAX_GROUPS_PER_SEARCH:
            raise TooManyGroups(f"at most {MAX_GROUPS_PER_SEARCH} groups per search")
        groups = list(dict.fromkeys(check_group(gid) for gid in group_ids))
        user = check_user(user_id) if user_id is not None else None
        if (
            not isinstance(max_user_num, int)
            or isinstance(max_user_num, bool)
            or not 1 <= max_user_num <= 20
        ):
            raise BadMaxUserNum(f"max_user_num must be an integer in 1..20, got {max_user_num!r}")
        if (
            isinstance(match_threshold, bool)
            or not isinstance(match_threshold, (int, float))
            or not 0 <= match_threshold <= 100
        ):
            raise BadMatchThreshold(
                f"match_threshold must be a number in 0..100, got {match_threshold!r}"
            )
        return self.identify_checked(appid, groups, embeddings, user, match_threshold, max_user_num)

    def identify_checked(
        self,
        appid: str,
        groups: Sequence[str],
        embeddings: np.ndarray,
        user: str | None,
        match_threshold: float,
        max_user_num: int,
    ) -> list[list[Match] | FaceCoreError]:
        """identify_many for arguments its caller has checked already, as the server does where
        a request comes in: `appid`, `user` and each of `groups` valid ids, the groups without
        duplicates and at most 10, `match_threshold` a number in 0..100, `max_user_num` an int in
        1..20. They are not checked again."""
        q = np.asarray(embeddings)
        if q.dtype != np.float32 or q.ndim != 2 or q.shape[1] != self.dim:
            raise InvalidArgument(f"embeddings must be float32 of shape (m, {self.dim})")
        self._fresh()
        states = [(grp, self._group(appid, grp)) for grp in groups]
        try:
            out = self._ranked(appid, states, q, user, match_threshold, max_user_num, False)
        except StoreUnavailable:
            if not self._store.shared:
                raise
            # The database is down: the owners in memory answer instead (docs/storage.md).
            out = self._ranked(appid, states, q, user, match_threshold, max_user_num, True)
        for grp, g in states:
            self._still(g, grp)
        return out

    def _ranked(
        self,
        appid: str,
        states: list[tuple[str, GroupState]],
        q: np.ndarray,
        user: str | None,
        match_threshold: float,
        max_user_num: int,
        offline: bool,
    ) -> list[list[Match] | FaceCoreError]:
        """identify_checked's answers. `offline`: from memory alone (a shared store's owners),
        each score the int8 index's instead of the exact one from the stored embedding."""
        # Candidates come from the int8 index, exact scores from the stored fp32 embeddings. The
        # int8 score is within ~0.01 of the exact one, so this margin keeps every true match.
        threshold_cos = score_to_similarity(float(match_threshold))
        floor = threshold_cos - 0.02 if match_threshold > 0 else -2.0
        best: list[dict[tuple[str, str], tuple[float, str]]] = [{} for _ in range(len(q))]
        for grp, g in states:
            self._search_group(appid, grp, g, q, user, max_user_num, floor, best, offline)
        ranked: list[list[Match]] = []
        # Compared as the scores answered, so no returned score is below match_threshold (an
        # identical face scores 100: similarity_to_score forgives float32 rounding at cosine 1).
        for per_user in best:
            scored = [
                (grp, u, float(similarity_to_score(c)), tok)
                for (grp, u), (c, tok) in per_user.items()
            ]
            matches = sorted(
                (Match(grp, u, "", s, tok) for grp, u, s, tok in scored if s >= match_threshold),
                key=lambda m: (-m.score, m.group_id, m.user_id),
            )[:max_user_num]
            ranked.append(matches)
        found = {(m.group_id, m.user_id) for ms in ranked for m in ms}
        if offline:
            owners = {grp: g.owners for grp, g in states}
            info = {(grp, u): o.info(u) if (o := owners[grp]) else "" for grp, u in found}
        else:
            info = self._user_infos(appid, found)
        return [
            [replace(m, user_info=info[(m.group_id, m.user_id)]) for m in matches]
            if matches
            else NoMatch("no user matches the face")
            for matches in ranked
        ]

    def _search_group(
        self,
        appid: str,
        group: str,
        g: GroupState,
        q: np.ndarray,
        user: str | None,
        max_user_num: int,
        floor: float,
        best: list[dict[tuple[str, str], tuple[float, str]]],
        offline: bool,
    ) -> None:
        n = len(g.index)
        if n == 0:
            return
        owners = g.owners if offline else None  # a shared store's groups all have owners
        allow = None
        if user is not None:
            if owners is not None:
                allow = owners.rows_of(user)
            else:
                allow = np.array(
                    sorted(r for _, r, _ in self._user_faces(appid, group, user)), np.int64
                )
            if len(allow) == 0:
                return
        k = min(n, max(4 * max_user_num, 16))
        while True:
            hits = g.index.search(q, k=k, filter=allow)
            records: dict[int, tuple[np.ndarray | None, str, str]]
            if owners is not None:
                records = {
                    r: (None, token, name) for r, (token, name) in owners.owners(hits.ids).items()
                }
            else:
                records = self._rows(appid, group, hits.ids)
            if k >= n or allow is not None:
                break
            # Widen while some query has fewer distinct users above the floor than asked for and
            # its k-th hit is still above the floor (more matches may hide behind it).
            short = False
            for ids, scores in zip(hits.ids, hits.scores):
                users = {
                    records[int(r)][2]
                    for r, s in zip(ids, scores)
                    if s >= floor and int(r) in records
                }
                if len(users) < max_user_num and scores[-1] >= floor:
                    short = True
            if not short:
                break
            k = min(n, 4 * k)
        for qi, (ids, scores) in enumerate(zip(hits.ids, hits.scores)):
            for r, approx in zip(ids, scores):
                rec = records.get(int(r))
                if rec is None:
                    continue  # a miss, or removed since the scan
                vec, token, name = rec
                if vec is None:  # offline: the int8 index's score
                    cos = float(approx)
                else:
                    cos = float(np.dot(q[qi].astype(np.float64), vec.astype(np.float64)))
                key = (group, name)
                if key not in best[qi] or cos > best[qi][key][0]:
                    best[qi][key] = (cos, token)

    def _rows(
        self, appid: str, group: str, ids: np.ndarray
    ) -> dict[int, tuple[np.ndarray | None, str, str]]:
        """row -> (fp32 embedding, token, user) for the rows in `ids`, in one multi-get."""
        rows = [int(r) for r in np.unique(ids[ids >= 0])]
        if not rows:
            return {}
        values = self._store.multi_get([codec.row_key(appid, group, r).encode() for r in rows])
        return {r: codec.parse_row(v, self.dim) for r, v in zip(rows, values) if v is not None}

    def _user_infos(self, appid: str, users: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """(group, user) -> user_info ("" for a user gone since the search), in one multi-get."""
        keys = sorted(users)
        values = self._store.multi_get([codec.user_key(appid, g, u).encode() for g, u in keys])
        return {
            k: json.loads(raw)["user_info"] if raw is not None else ""
            for k, raw in zip(keys, values)
        }
