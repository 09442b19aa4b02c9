"""The machine's fingerprint: a digest of its hardware identifiers, for a licence to name.

Read from files every user may read (mode o+r), so root and an ordinary user compute the same
digest; a part whose file is missing or readable only by root is skipped, and `Fingerprint.skipped`
says which and why. The parts, each optional:

- machine-id: `/etc/machine-id` (set when the OS is installed);
- cpu: the first `model name` of `/proc/cpuinfo`;
- board: `/sys/class/dmi/id/` board vendor and name (the serial and product UUID are root's);
- disk: the serial-bearing names in `/dev/disk/by-id` (ata-, nvme-, scsi-, wwn-, mmc-), USB and
  partitions left out so a plugged stick changes nothing;
- nic: the permanent MAC address of each physical NIC (`/sys/class/net/*/device` exists,
  `addr_assign_type` 0), virtual and randomised addresses left out.

The same after a reboot; different when the board (its onboard NICs), a disk or the OS install
changes. GPUs are not parts: replacing them, or the GPU servers, leaves the digest as it was.
"""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import dataclass, field
from pathlib import Path

DISK_PREFIXES = ("ata-", "nvme-", "scsi-", "wwn-", "mmc-")


@dataclass(frozen=True)
class Fingerprint:
    digest: str  # sha256 hex of the parts, as a licence names it
    parts: list[tuple[str, str]]  # (kind, value), sorted: what went in
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, why): what did not

    def as_dict(self) -> dict[str, object]:
        return {
            "fingerprint": self.digest,
            "parts": [{"kind": k, "value": v} for k, v in self.parts],
            "skipped": [{"source": s, "why": w} for s, w in self.skipped],
        }


class NoHardwareIds(Exception):
    """Nothing identifying could be read: a fingerprint of nothing would match every machine."""


def collect(root: Path = Path("/")) -> Fingerprint:
    """This machine's fingerprint; `root` is read in place of / (tests give a fake tree)."""
    parts: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []

    def read(rel: str) -> str | None:
        path = root / rel
        try:
            mode = path.stat().st_mode
        except OSError:
            skipped.append((f"/{rel}", "absent"))
            return None
        if not mode & stat.S_IROTH:
            skipped.append((f"/{rel}", "readable by root only"))
            return None
        try:
            text = path.read_text(errors="replace").strip()
        except OSError as e:
            skipped.append((f"/{rel}", f"unreadable ({e.strerror})"))
            return None
        if not text:
            skipped.append((f"/{rel}", "empty"))
            return None
        return text

    machine_id = read("etc/machine-id")
    if machine_id:
        parts.append(("machine-id", machine_id))
    cpuinfo = read("proc/cpuinfo")
    for line in (cpuinfo or "").splitlines():
        if line.startswith("model name"):
            parts.append(("cpu", line.split(":", 1)[1].strip()))
            break
    board = [read(f"sys/class/dmi/id/{name}") for name in ("board_vendor", "board_name")]
    if any(board):
        parts.append(("board", " / ".join(b or "" for b in board)))
    for name in ("board_serial", "product_uuid"):  # listed so the output says why they are out
        read(f"sys/class/dmi/id/{name}")
    parts.extend(("disk", d) for d in _disks(root, skipped))
    parts.extend(("nic", mac) for mac in _nics(root, skipped))
    parts = sorted(set(parts))
    if not parts:
        raise NoHardwareIds(
            "no hardware identifier is readable here (machine-id, CPU model, board, disks, "
            "NICs): a licence cannot be bound to this machine"
        )
    canonical = json.dumps(parts, separators=(",", ":")).encode()
    return Fingerprint(hashlib.sha256(canonical).hexdigest(), parts, skipped)


def _disks(root: Path, skipped: list[tuple[str, str]]) -> list[str]:
    by_id = root / "dev/disk/by-id"
    try:
        names = sorted(p.name for p in by_id.iterdir())
    except OSError:
        skipped.append(("/dev/disk/by-id", "absent"))
        return []
    return [n for n in names if n.startswith(DISK_PREFIXES) and "-part" not in n]


def _nics(root: Path, skipped: list[tuple[str, str]]) -> list[str]:
    net = root / "sys/class/net"
    try:
        nics = sorted(net.iterdir())
    except OSError:
        skipped.append(("/sys/class/net", "absent"))
        return []
    macs = []
    for nic in nics:
        if not (nic / "device").exists():
            continue  # virtual: loopback, bridges, veth, tunnels
        try:
            assign = (nic / "addr_assign_type").read_text().strip()
            mac = (nic / "address").read_text().strip().lower()
        except OSError:
            skipped.append((f"/sys/class/net/{nic.name}", "unreadable"))
            continue
        if assign != "0" or not mac.strip("0:"):
            skipped.append((f"/sys/class/net/{nic.name}", "address not permanent"))
            continue
        macs.append(mac)  # not the name: a reinstall may rename the NIC
    return macs
