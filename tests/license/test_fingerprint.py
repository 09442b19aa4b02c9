"""The fingerprint over a fake machine tree: what goes in, what is left out and why, what changes
it (a board, a disk, the OS install) and what does not (a reboot, a GPU, a USB stick, a veth)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from facecore_license.fingerprint import NoHardwareIds, collect


def write(root: Path, rel: str, text: str, mode: int = 0o444) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def nic(root: Path, name: str, mac: str, physical: bool = True, assign: str = "0") -> None:
    if physical:
        (root / f"sys/class/net/{name}/device").mkdir(parents=True)
    write(root, f"sys/class/net/{name}/address", mac + "\n")
    write(root, f"sys/class/net/{name}/addr_assign_type", assign + "\n")


def machine(root: Path) -> Path:
    write(root, "etc/machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    write(root, "proc/cpuinfo", "processor\t: 0\nmodel name\t: AMD EPYC 7B13\n\nprocessor\t: 1\n")
    write(root, "sys/class/dmi/id/board_vendor", "Supermicro\n")
    write(root, "sys/class/dmi/id/board_name", "H12SSL-i\n")
    write(root, "sys/class/dmi/id/board_serial", "ZM21AS000123\n", 0o400)  # root's only
    by_id = root / "dev/disk/by-id"
    by_id.mkdir(parents=True)
    for name in (
        "nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0T123456",
        "nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0T123456-part1",
        "usb-SanDisk_Cruzer_4C530001-0:0",
        "dm-name-vg0-root",
    ):
        (by_id / name).touch()
    nic(root, "eno1", "3C:EC:EF:01:02:03")
    nic(root, "veth9f1", "82:39:f9:8b:bb:d7", physical=False)
    nic(root, "wlp2s0", "5a:11:22:33:44:55", assign="3")  # a randomised address
    return root


def test_parts_and_what_was_left_out(tmp_path: Path) -> None:
    fp = collect(machine(tmp_path))
    assert fp.parts == [
        ("board", "Supermicro / H12SSL-i"),
        ("cpu", "AMD EPYC 7B13"),
        ("disk", "nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0T123456"),
        ("machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4"),
        ("nic", "3c:ec:ef:01:02:03"),
    ]
    skipped = dict(fp.skipped)
    assert skipped["/sys/class/dmi/id/board_serial"] == "readable by root only"
    assert skipped["/sys/class/dmi/id/product_uuid"] == "absent"
    assert skipped["/sys/class/net/wlp2s0"] == "address not permanent"
    assert len(fp.digest) == 64 and fp.as_dict()["fingerprint"] == fp.digest


def test_the_same_after_a_reboot_and_a_gpu_change(tmp_path: Path) -> None:
    root = machine(tmp_path)
    before = collect(root).digest
    (root / "dev/disk/by-id/usb-Kingston_DataTraveler_0001-0:0").touch()  # a stick plugged in
    write(root, "sys/class/drm/card1/device/vendor", "0x10de\n")  # another GPU
    nic(root, "docker0", "02:42:ac:11:00:02", physical=False)
    assert collect(root).digest == before


@pytest.mark.parametrize(
    "change",
    ["board NIC", "disk", "board model", "OS reinstall"],
)
def test_a_replaced_board_disk_or_install_changes_it(tmp_path: Path, change: str) -> None:
    root = machine(tmp_path)
    before = collect(root).digest
    if change == "board NIC":
        write(root, "sys/class/net/eno1/address", "3c:ec:ef:09:09:09\n")
    elif change == "disk":
        (root / "dev/disk/by-id/nvme-Samsung_SSD_980_PRO_1TB_S5GXNX0T123456").unlink()
        (root / "dev/disk/by-id/nvme-WD_Black_SN850X_2TB_23123K800123").touch()
    elif change == "board model":
        write(root, "sys/class/dmi/id/board_name", "H13SSL-N\n")
    else:
        write(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    assert collect(root).digest != before


def test_a_machine_with_nothing_readable_has_no_fingerprint(tmp_path: Path) -> None:
    write(tmp_path, "etc/machine-id", "3d1219c7c4c5404aaa1f6d2a48adfda4\n", 0o400)
    with pytest.raises(NoHardwareIds, match="no hardware identifier is readable"):
        collect(tmp_path)


def test_this_machine_has_one() -> None:
    fp = collect()
    assert fp.parts and collect().digest == fp.digest
