"""The newc cpio writer and reader."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest

from presculpt.lab.cpio import (
    CpioEntry,
    build_cpio,
    char_device,
    directory,
    pad_to,
    read_cpio,
    regular,
    symlink,
)


def test_round_trip_keeps_names_modes_data_and_devices() -> None:
    entries = [
        directory("etc"),
        regular("etc/hello", b"hello world\n", 0o640),
        regular("init", b"#!/bin/sh\n", 0o755),
        symlink("bin/sh", "busybox"),
        char_device("dev/console", 5, 1),
    ]
    back = read_cpio(build_cpio(entries))
    assert back == entries
    assert stat.S_IMODE(back[2].mode) == 0o755 and back[2].is_file
    assert back[0].is_dir
    assert (back[4].rdev_major, back[4].rdev_minor) == (5, 1)


def test_archive_is_aligned_and_reproducible() -> None:
    entries = [regular("a", b"x" * 5), regular("bb", b"")]
    data = build_cpio(entries)
    assert len(data) % 4 == 0
    assert data == build_cpio(entries)


def test_leading_slash_is_dropped_and_bad_names_refused() -> None:
    assert read_cpio(build_cpio([regular("/etc", b"")]))[0].name == "etc"
    with pytest.raises(ValueError):
        build_cpio([CpioEntry("TRAILER!!!", 0)])
    with pytest.raises(ValueError):
        build_cpio([regular("/", b"")])


def test_pad_to() -> None:
    assert pad_to(b"abc", 4) == b"abc\0"
    assert pad_to(b"abcd", 4) == b"abcd"
    assert len(pad_to(b"x" * 513)) == 1024


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_gnu_cpio_lists_our_archive() -> None:
    data = build_cpio([directory("etc"), regular("etc/spec", b"step 1 2\n")])
    listing = (
        subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True, check=True)
        .stdout.decode()
        .split()
    )
    assert listing == ["etc", "etc/spec"]
