"""A minimal writer and reader of cpio archives in the "newc" format the Linux kernel unpacks.

Writing archives in Python (rather than with the ``cpio`` tool over a staging tree) needs no root
for device nodes, gives byte-identical archives for identical inputs, and is easy to test.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
HEADER_LEN = 110


@dataclass(frozen=True)
class CpioEntry:
    """One archive member: ``mode`` holds the file type bits and permissions (as in ``st_mode``)."""

    name: str
    mode: int
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.mode)


def directory(name: str, perm: int = 0o755) -> CpioEntry:
    return CpioEntry(name, stat.S_IFDIR | perm)


def regular(name: str, data: bytes, perm: int = 0o644) -> CpioEntry:
    return CpioEntry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> CpioEntry:
    return CpioEntry(name, stat.S_IFLNK | 0o777, target.encode())


def char_device(name: str, major: int, minor: int, perm: int = 0o600) -> CpioEntry:
    return CpioEntry(name, stat.S_IFCHR | perm, b"", major, minor)


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: CpioEntry, nlink: int) -> bytes:
    name = entry.name.encode() + b"\0"
    fields = (
        ino,
        entry.mode,
        0,  # uid: root
        0,  # gid: root
        nlink,
        0,  # mtime: fixed, so archives are reproducible
        len(entry.data),
        0,  # dev major
        0,  # dev minor
        entry.rdev_major,
        entry.rdev_minor,
        len(name),
        0,  # checksum (unused by newc)
    )
    head = MAGIC + b"".join(b"%08X" % value for value in fields)
    return head + name + _pad4(HEADER_LEN + len(name))


def build_cpio(entries: Iterable[CpioEntry]) -> bytes:
    """The newc archive of ``entries`` in order (parents must come before their children),
    ending with the trailer and padded to a multiple of 4 bytes."""
    out = bytearray()
    for ino, entry in enumerate(entries, start=1):
        name = entry.name.lstrip("/")
        if not name or name == TRAILER:
            raise ValueError(f"invalid cpio member name {entry.name!r}")
        entry = CpioEntry(name, entry.mode, entry.data, entry.rdev_major, entry.rdev_minor)
        out += _header(ino, entry, 2 if entry.is_dir else 1)
        out += entry.data + _pad4(len(entry.data))
    out += _header(0, CpioEntry(TRAILER, 0), 1)
    return bytes(out)


def read_cpio(data: bytes) -> list[CpioEntry]:
    """The members of one uncompressed newc archive (up to its trailer)."""
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if data[pos : pos + 6] != MAGIC:
            raise ValueError(f"not a newc cpio header at offset {pos}")
        values = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rdev_major, rdev_minor, namesize = (
            values[1],
            values[6],
            values[9],
            values[10],
            values[11],
        )
        name_start = pos + HEADER_LEN
        name = data[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize + len(_pad4(HEADER_LEN + namesize))
        body = data[data_start : data_start + filesize]
        pos = data_start + filesize + len(_pad4(filesize))
        if name == TRAILER:
            return entries
        entries.append(CpioEntry(name, mode, body, rdev_major, rdev_minor))


def pad_to(data: bytes, multiple: int = 512) -> bytes:
    """``data`` followed by zero bytes up to a multiple of ``multiple``.

    The kernel skips zero padding between concatenated initramfs archives but only recognises an
    uncompressed archive that starts 4-byte aligned, so every piece but the last must be padded.
    """
    return data + b"\0" * (-len(data) % multiple)
