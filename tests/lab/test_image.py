"""Building the guest image: module order, modinfo, the base archive, and caching."""

from __future__ import annotations

import gzip
import lzma
import shutil
import stat
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from presculpt.lab import image
from presculpt.lab.cpio import read_cpio
from presculpt.lab.image import (
    ImageError,
    base_entries,
    decompress_module,
    ensure_image,
    modinfo_depends,
    module_load_order,
    parse_kernel_dependency,
)


def fake_module(depends: str, name: str = "m") -> bytes:
    """A minimal 64-bit ELF file with a .modinfo section (all a module needs for modinfo)."""
    modinfo = f"license=GPL\0depends={depends}\0name={name}\0".encode()
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    data_off = 64
    str_off = data_off + len(modinfo)
    sh_off = str_off + len(shstrtab)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, sh_off)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)

    def section(name_off: int, offset: int, size: int) -> bytes:
        sh = bytearray(64)
        struct.pack_into("<I", sh, 0, name_off)
        struct.pack_into("<QQ", sh, 0x18, offset, size)
        return bytes(sh)

    sections = (
        section(0, 0, 0) + section(1, data_off, len(modinfo)) + section(10, str_off, len(shstrtab))
    )
    return bytes(header) + modinfo + shstrtab + sections


def test_modinfo_depends() -> None:
    assert modinfo_depends(fake_module("virtio_ring,virtio-pci-legacy-dev")) == [
        "virtio_ring",
        "virtio_pci_legacy_dev",
    ]
    assert modinfo_depends(fake_module("")) == []
    with pytest.raises(ImageError):
        modinfo_depends(b"not an elf file at all, not at all" * 4)


def test_module_load_order_puts_dependencies_first() -> None:
    depends = {
        "virtio_ring": [],
        "virtio": ["virtio_ring"],
        "virtio_pci_legacy_dev": [],
        "virtio_pci_modern_dev": [],
        "virtio_pci": ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"],
        "virtio_balloon": ["virtio", "virtio_ring"],
    }
    order = module_load_order(depends, ["virtio_pci", "virtio_balloon"])
    assert sorted(order) == sorted(depends)
    for module, deps in depends.items():
        assert all(order.index(d) < order.index(module) for d in deps)
    with pytest.raises(ImageError, match="not found"):
        module_load_order({"a": ["b"]}, ["a"])
    with pytest.raises(ImageError, match="circular"):
        module_load_order({"a": ["b"], "b": ["a"]}, ["a"])


def test_parse_kernel_dependency() -> None:
    out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n"
    assert parse_kernel_dependency(out) == "linux-image-6.1.0-56-amd64"
    with pytest.raises(ImageError):
        parse_kernel_dependency("linux-image-amd64\n")


def test_decompress_module_variants(tmp_path: Path) -> None:
    ko = fake_module("")
    (tmp_path / "a.ko").write_bytes(ko)
    (tmp_path / "b.ko.xz").write_bytes(lzma.compress(ko))
    (tmp_path / "c.ko.gz").write_bytes(gzip.compress(ko))
    for name in ("a.ko", "b.ko.xz", "c.ko.gz"):
        assert decompress_module(tmp_path / name) == ko
    if shutil.which("zstd"):
        import subprocess

        subprocess.run(
            ["zstd", "-q", str(tmp_path / "a.ko"), "-o", str(tmp_path / "d.ko.zst")], check=True
        )
        assert decompress_module(tmp_path / "d.ko.zst") == ko


def test_base_entries_hold_init_tools_modules_and_console() -> None:
    entries = base_entries(
        init=b"#!/bin/busybox sh\n",
        busybox=b"BB",
        guestd=b"GD",
        modules={"virtio_ring": b"R", "virtio": b"V"},
        module_order=["virtio_ring", "virtio"],
    )
    by_name = {e.name: e for e in entries}
    assert stat.S_IMODE(by_name["init"].mode) == 0o755
    assert by_name["sbin/guestd"].data == b"GD"
    assert by_name["lib/modules/presculpt.order"].data == b"virtio_ring\nvirtio\n"
    assert stat.S_ISCHR(by_name["dev/console"].mode)
    names = [e.name for e in entries]
    for entry in entries:  # parents before children
        parent = entry.name.rpartition("/")[0]
        assert not parent or names.index(parent) < names.index(entry.name)


class FakeApt:
    """Stands in for apt-cache, apt-get, dpkg-deb and gcc; records the commands it ran."""

    def __init__(self, modules: dict[str, str]) -> None:
        self.modules = modules  # name -> depends
        self.commands: list[list[str]] = []

    def __call__(self, argv: Sequence[str], cwd: Path | None) -> str:
        argv = list(argv)
        self.commands.append(argv)
        if argv[:2] == ["apt-cache", "depends"]:
            return "linux-image-amd64\n  Depends: linux-image-9.9.9-1-amd64\n"
        if argv[:2] == ["apt-get", "download"]:
            assert cwd is not None
            (cwd / f"{argv[2]}_1_amd64.deb").write_bytes(b"deb")
            return ""
        if argv[:2] == ["dpkg-deb", "-x"]:
            root = Path(argv[3])
            (root / "boot").mkdir(parents=True)
            (root / "boot/vmlinuz-9.9.9-1-amd64").write_bytes(b"KERNEL")
            mods = root / "lib/modules/9.9.9-1-amd64"
            (mods / "kernel/drivers/virtio").mkdir(parents=True)
            (mods / "modules.builtin").write_text("kernel/drivers/block/builtin_thing.ko\n")
            for name, deps in self.modules.items():
                (mods / f"kernel/drivers/virtio/{name}.ko.xz").write_bytes(
                    lzma.compress(fake_module(deps, name))
                )
            return ""
        if argv[0] == "gcc":
            Path(argv[argv.index("-o") + 1]).write_bytes(b"\x7fELF guestd")
            return ""
        raise AssertionError(f"unexpected command {argv}")


def test_ensure_image_builds_once_and_then_returns_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(image, "APT_LISTS", tmp_path / "no-lists")
    fake = FakeApt(
        {
            "virtio_ring": "",
            "virtio": "virtio_ring",
            "virtio_pci": "virtio,virtio_ring,builtin_thing",
            "virtio_balloon": "virtio,virtio_ring",
            "unrelated": "",
        }
    )
    first = ensure_image(tmp_path / "cache", run=fake)
    assert first.kernel_version == "9.9.9-1-amd64"
    assert first.kernel_path.read_bytes() == b"KERNEL"
    assert set(first.modules) == {"virtio_ring", "virtio", "virtio_pci", "virtio_balloon"}
    assert first.modules[0] == "virtio_ring"
    archive = zlib.decompressobj(wbits=31).decompress(first.initrd_path.read_bytes())
    names = {e.name for e in read_cpio(archive)}
    assert {"init", "sbin/guestd", "bin/busybox", "lib/modules/virtio_balloon.ko"} <= names
    assert len(first.initrd_path.read_bytes()) % 512 == 0
    assert stat.S_IMODE(first.initrd_path.stat().st_mode) & 0o004  # QEMU must read it

    ran = len(fake.commands)
    second = ensure_image(tmp_path / "cache", run=fake)
    assert second == first
    assert len(fake.commands) == ran  # nothing fetched, compiled or even resolved again


def test_apt_get_update_only_when_download_fails(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(image, "APT_LISTS", tmp_path / "no-lists")
    fake = FakeApt(
        {
            "virtio_ring": "",
            "virtio": "virtio_ring",
            "virtio_pci": "virtio",
            "virtio_balloon": "virtio",
        }
    )
    failures = {"download": 1}

    def flaky(argv: Sequence[str], cwd: Path | None) -> str:
        if list(argv[:2]) == ["apt-get", "download"] and failures["download"]:
            failures["download"] -= 1
            fake.commands.append(list(argv))
            raise ImageError("E: Unable to locate package")
        if list(argv) == ["apt-get", "update"]:
            fake.commands.append(list(argv))
            return ""
        return fake(argv, cwd)

    ensure_image(tmp_path / "cache", run=flaky)
    commands = [" ".join(c[:2]) for c in fake.commands]
    assert commands.count("apt-get update") == 1
    assert commands.index("apt-get update") < len(commands) - 1
