"""A server that cannot start says why in one line on stderr and exits 2, never a traceback: its
data directory held by another FaceCore process, not writable, or not a directory; a --store
database that cannot be reached."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import Client, free_port, server_command, start_server


def second(data: Path) -> subprocess.CompletedProcess[str]:
    command = server_command(data, free_port())
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


def one_line(out: subprocess.CompletedProcess[str], says: str) -> None:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("facecore-server: "), out.stderr
    assert says in lines[0], lines[0]


def test_a_second_server_on_the_same_data(server: Client) -> None:
    one_line(second(server.data), "in use by another FaceCore process")
    assert server.ok("group/list", {})["group_id_list"] == []  # the first one is untouched


def test_a_data_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    one_line(second(tmp_path / "file"), "cannot be opened")


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A read-only bind mount (we run as root, for whom permissions do not stop a write)."""
    src, mnt = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    mnt.mkdir()
    (src / "existing").mkdir()
    made = subprocess.run(["mount", "--bind", str(src), str(mnt)], check=False, capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {made.stderr.decode().strip()}")
    try:
        ro = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(mnt)], check=False, capture_output=True
        )
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only here: {ro.stderr.decode().strip()}")
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("name", ["existing", "new"])
def test_a_read_only_data_directory(read_only: Path, name: str) -> None:
    one_line(second(read_only / name), "is not writable")


def test_the_server_still_starts_after_a_refused_second(tmp_path: Path) -> None:
    first = start_server(tmp_path)
    try:
        one_line(second(first.data), "in use")
    finally:
        assert first.stop() == 0
    again = start_server(tmp_path)
    again.stop()


def test_a_store_database_that_cannot_be_reached(tmp_path: Path) -> None:
    nowhere = f"postgresql://facecore:secret@127.0.0.1:{free_port()}/nowhere"
    command = server_command(tmp_path / "data", free_port(), "--store", nowhere)
    out = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    one_line(out, "the --store database cannot be used")
    assert "secret" not in out.stderr  # the password is never printed
