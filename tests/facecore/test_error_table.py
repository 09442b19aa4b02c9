"""The error classes against the spec's error table (read from the spec file itself), the code
table of docs/api.md, and the source: every code of the table is either sent, by one named class
carrying the table's exact text, or listed in UNSENT with a reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from facecore import errors as E

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO.parent / "shared" / "spec" / "baidu-face-private-v3.md"
_ROW = re.compile(r"^\|\s*(\d{6})\s*\|\s*([^|]*?)\s*\|", re.MULTILINE)
# Outside the private-deployment table: Baidu's public-cloud codes and texts (its error page).
CLOUD = {
    3: "Unsupported openapi method",
    6: "No permission to access data",
    14: "IAM Certification failed",
    18: "Open api qps request limit reached",
    110: "Access token invalid or no longer valid",
    111: "Access token expired",
}


def spec_table() -> dict[int, str]:
    rows = _ROW.findall(SPEC.read_text(encoding="utf-8"))
    table = {int(code): text for code, text in rows}
    assert len(table) == len(rows) > 80, "the spec's error table was not found whole"
    return table


def test_every_code_of_the_spec_is_sent_by_a_class_or_unsent_with_a_reason() -> None:
    table = spec_table()
    sent = {c.code for c in E.sent() if c.code is not None}
    assert not sent & set(E.UNSENT), sorted(sent & set(E.UNSENT))
    assert (sent - set(CLOUD)) | set(E.UNSENT) == set(table)
    assert all(len(reason) > 20 for reason in E.UNSENT.values())


@pytest.mark.parametrize("cls", E.sent(), ids=lambda c: c.__name__)
def test_class_carries_the_tables_text(cls: type[E.FaceCoreError]) -> None:
    assert cls.code is not None
    expected = CLOUD.get(cls.code) or spec_table()[cls.code]
    assert cls.message == expected
    e = cls(retry_after=3) if cls is E.RateLimited else cls("why, in words")
    assert e.code == cls.code and e.error_msg() == expected
    assert str(e) != expected or cls is E.LivenessMissing  # the detail says why in words


def test_missing_param_names_the_parameter() -> None:
    assert E.MissingParam("x", "image").error_msg() == "param[image] is null"
    assert E.BadMatchThreshold("x", "match_threshold").error_msg() == "param[] is null"
    assert E.BadBody("x", "image").error_msg() == "param[] is null"


def test_one_class_per_code_but_222001_6_and_222201() -> None:
    """222001 has the missing parameter's class and, under one base, those the table has no code
    for (an unreadable body, match_threshold, a key's name), 6 three (another appid's credential,
    another appid's key, a route the licence does not sell) and 222201 three (a service the
    server depends on does not answer: the shared store, authd);
    every other code one, so catching a name catches one condition. A code's later classes
    subclass its first."""
    codes = [c.code for c in E.sent()]
    assert {c for c in codes if codes.count(c) > 1} == {222001, 6, 222201}
    assert all(issubclass(c, E.MissingParam) for c in E.sent() if c.code == 222001)
    assert all(issubclass(c, E.NoPermission) for c in E.sent() if c.code == 6)
    assert all(issubclass(c, E.NetworkUnavailable) for c in E.sent() if c.code == 222201)


def test_every_sent_code_is_documented() -> None:
    doc = (REPO / "docs" / "api.md").read_text()
    section = doc[doc.index("### Every code FaceCore sends") :]
    for cls in E.sent():
        row = re.search(rf"^\| {cls.code} \| (.*?) \| (.*?) \|", section, re.MULTILINE)
        assert row, f"{cls.code} is not in docs/api.md's code table"
        assert row.group(1) == cls.message and f"`{cls.__name__}`" in row.group(2)
    never = section[section.index("Never sent") :].split("\n\n")[0]
    listed = {int(c) for c in re.findall(r"\b\d{6}\b", never)}
    for start, end in re.findall(r"\b(\d{6})-(\d{6})\b", never):
        listed |= set(range(int(start), int(end) + 1))
    assert listed == set(E.UNSENT)


def test_codes_are_spelled_only_by_the_error_classes() -> None:
    """No module but facecore/errors.py spells a v3 code: code raises and catches names."""
    code = re.compile(r"(?<![\d.])22[23]\d{3}(?![\d.])")
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sorted([*(REPO / "python").rglob("*.py"), *(REPO / "license").rglob("*.py")])
        if path != REPO / "python" / "facecore" / "errors.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if code.search(line)
    ]
    assert not found, "\n".join(found)


def test_every_sent_class_is_raised_somewhere() -> None:
    source = "\n".join(
        path.read_text()
        for path in (REPO / "python").rglob("*.py")
        if path != REPO / "python" / "facecore" / "errors.py"
    )
    def used(cls: type[E.FaceCoreError]) -> bool:  # a base is raised through its subclasses
        named = re.search(rf"\b{cls.__name__}\b", source) is not None
        return named or any(used(sub) for sub in cls.__subclasses__())

    unused = [c.__name__ for c in E.sent() if not used(c)]
    assert not unused, unused
