"""Build and cache the lab guest's kernel and base initramfs.

The image is a Debian kernel (the one ``linux-image-amd64`` depends on now) and an initramfs of
busybox-static, the virtio modules it needs for ballooning, ``guest/init`` and a static build of
``guest/guestd.c``. It lives under ``/var/lib/libvirt/images/presculpt-lab`` (readable by the
``libvirt-qemu`` user), keyed by kernel version and a hash of everything that goes into it, so
a second :func:`ensure_image` returns at once.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from presculpt.errors import UserError
from presculpt.lab.cpio import CpioEntry, build_cpio, char_device, directory, pad_to, regular

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("/var/lib/libvirt/images/presculpt-lab")
KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# Modules the guest needs; their dependencies are found in the .ko files themselves.
WANTED_MODULES = ("virtio_pci", "virtio_balloon")
IMAGE_FORMAT = 1  # bump when the layout of the image changes without its inputs changing
APT_LISTS = Path("/var/lib/apt/lists")
MODULE_ORDER_FILE = "lib/modules/presculpt.order"

Runner = Callable[[Sequence[str], Path | None], str]


class ImageError(UserError):
    """The guest image cannot be built (no kernel package, no compiler, no busybox-static)."""


@dataclass(frozen=True)
class GuestImage:
    """A built image: the kernel and base initramfs every lab guest boots."""

    kernel_version: str
    kernel_path: Path
    initrd_path: Path
    key: str
    modules: tuple[str, ...]


def run_command(argv: Sequence[str], cwd: Path | None = None) -> str:
    """Run a command and return its stdout; failure raises :class:`ImageError` with its stderr."""
    try:
        done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ImageError(f"{argv[0]} is not installed") from None
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        message = next((line for line in reversed(detail) if line.startswith("E:")), None)
        message = message or (detail[-1] if detail else f"exit status {done.returncode}")
        raise ImageError(f"{' '.join(argv)} failed: {message}")
    return done.stdout


def ensure_image(
    cache_dir: Path = DEFAULT_CACHE_DIR,
    *,
    kernel_package: str | None = None,
    run: Runner = run_command,
) -> GuestImage:
    """Return the cached image for the current kernel, building whatever is missing."""
    cache_dir = Path(cache_dir)
    _make_readable_dir(cache_dir)
    init, guestd_c = _guest_source("init"), _guest_source("guestd.c")
    package = kernel_package or resolve_kernel_package(cache_dir, run)
    kernel_version = package.removeprefix("linux-image-")
    with _locked(cache_dir):
        kernel_dir = _ensure_kernel(cache_dir, package, kernel_version, run)
        manifest = json.loads((kernel_dir / "manifest.json").read_text())
        modules = tuple(manifest["modules"])
        busybox = _ensure_busybox(cache_dir, run)
        key = _image_key(kernel_version, init, guestd_c, busybox.read_bytes(), modules)
        image_dir = cache_dir / "images" / f"{kernel_version}-{key}"
        initrd = image_dir / "initrd.img"
        if not initrd.exists():
            log.info("building lab initramfs %s", image_dir.name)
            with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
                guestd = Path(tmp) / "guestd"
                compile_guestd(guestd_c, guestd, run)
                entries = base_entries(
                    init=init,
                    busybox=busybox.read_bytes(),
                    guestd=guestd.read_bytes(),
                    modules={m: (kernel_dir / "modules" / f"{m}.ko").read_bytes() for m in modules},
                    module_order=modules,
                )
                staged = Path(tmp) / "image"
                staged.mkdir()
                (staged / "initrd.img").write_bytes(
                    pad_to(gzip.compress(build_cpio(entries), compresslevel=6, mtime=0))
                )
                shutil.copy2(guestd, staged / "guestd")
                _make_readable_tree(staged)
                (cache_dir / "images").mkdir(exist_ok=True, mode=0o755)
                shutil.rmtree(image_dir, ignore_errors=True)  # a half-built leftover
                os.replace(staged, image_dir)
            log.info("lab initramfs ready: %s", initrd)
            _prune_images(cache_dir / "images", keep=image_dir)
    return GuestImage(
        kernel_version=kernel_version,
        kernel_path=kernel_dir / "vmlinuz",
        initrd_path=initrd,
        key=key,
        modules=modules,
    )


def resolve_kernel_package(cache_dir: Path, run: Runner = run_command) -> str:
    """The kernel package ``linux-image-amd64`` depends on (remembered until apt's lists change)."""
    memo = cache_dir / "kernel-package.json"
    lists_state = _apt_lists_state()
    try:
        saved = json.loads(memo.read_text())
        if saved.get("lists_state") == lists_state:
            return str(saved["package"])
    except (OSError, ValueError, KeyError):
        pass
    try:
        output = run(["apt-cache", "depends", KERNEL_META_PACKAGE], None)
    except ImageError:
        log.info("apt-cache knows no %s; running apt-get update", KERNEL_META_PACKAGE)
        run(["apt-get", "update"], None)
        output = run(["apt-cache", "depends", KERNEL_META_PACKAGE], None)
        lists_state = _apt_lists_state()
    package = parse_kernel_dependency(output)
    tmp = memo.with_suffix(".tmp")
    tmp.write_text(json.dumps({"package": package, "lists_state": lists_state}))
    os.replace(tmp, memo)
    return package


def parse_kernel_dependency(apt_cache_output: str) -> str:
    """The ``linux-image-<version>`` package named in ``apt-cache depends`` output."""
    match = re.search(r"Depends:\s*(linux-image-\d\S*)", apt_cache_output)
    if not match:
        raise ImageError(f"cannot find the kernel package {KERNEL_META_PACKAGE} depends on")
    return match.group(1)


def compile_guestd(source: bytes, output: Path, run: Runner = run_command) -> None:
    """Compile guestd as a static binary."""
    src = output.with_name("guestd.c")
    src.write_bytes(source)
    log.info("compiling guestd")
    run(["gcc", "-O2", "-static", "-pthread", "-o", str(output), str(src)], None)


def base_entries(
    *,
    init: bytes,
    busybox: bytes,
    guestd: bytes,
    modules: Mapping[str, bytes],
    module_order: Sequence[str],
) -> list[CpioEntry]:
    """The members of the base initramfs."""
    entries = [directory(d) for d in ("bin", "sbin", "dev", "proc", "sys", "tmp", "etc")]
    entries += [directory("etc/presculpt"), directory("lib"), directory("lib/modules")]
    entries += [
        char_device("dev/console", 5, 1),
        char_device("dev/null", 1, 3, 0o666),
        regular("init", init, 0o755),
        regular("bin/busybox", busybox, 0o755),
        regular("sbin/guestd", guestd, 0o755),
        regular(MODULE_ORDER_FILE, "".join(f"{m}\n" for m in module_order).encode()),
    ]
    entries += [regular(f"lib/modules/{name}.ko", modules[name]) for name in module_order]
    return entries


def module_load_order(depends: Mapping[str, Sequence[str]], wanted: Iterable[str]) -> list[str]:
    """``wanted`` and everything they depend on, each after its dependencies."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ImageError(f"circular module dependency through {name}")
        if name not in depends:
            raise ImageError(f"kernel module {name} not found")
        visiting.add(name)
        for dep in depends[name]:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def modinfo_depends(ko: bytes) -> list[str]:
    """The ``depends=`` of a kernel module, read from its ELF ``.modinfo`` section."""
    for field in _modinfo_fields(ko):
        if field.startswith(b"depends="):
            value = field[len(b"depends=") :].decode()
            return [_module_name(d) for d in value.split(",") if d]
    return []


def decompress_module(path: Path) -> bytes:
    """The bytes of a ``.ko``, ``.ko.xz``, ``.ko.gz`` or ``.ko.zst`` module."""
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".ko.zst"):
        return _zstd_decompress(path)
    return path.read_bytes()


# -- the kernel ------------------------------------------------------------------------------------


def _ensure_kernel(cache_dir: Path, package: str, kernel_version: str, run: Runner) -> Path:
    kernel_dir = cache_dir / "kernels" / kernel_version
    if (kernel_dir / "manifest.json").exists():
        return kernel_dir
    log.info("fetching kernel package %s", package)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        root = _download_and_extract(package, Path(tmp), run)
        vmlinuz = root / "boot" / f"vmlinuz-{kernel_version}"
        module_root = root / "lib" / "modules" / kernel_version
        if not vmlinuz.exists() or not module_root.is_dir():
            raise ImageError(f"{package} holds no boot/vmlinuz-{kernel_version} and modules")
        builtin = _builtin_modules(module_root)
        files = {_module_name(p.name): p for p in (module_root / "kernel").rglob("*.ko*")}
        wanted = [m for m in WANTED_MODULES if m not in builtin]
        blobs: dict[str, bytes] = {}
        depends: dict[str, list[str]] = {}
        pending = list(wanted)
        while pending:
            name = pending.pop()
            if name in blobs or name in builtin:
                continue
            if name not in files:
                raise ImageError(f"{package} has no kernel module {name}")
            blobs[name] = decompress_module(files[name])
            depends[name] = [d for d in modinfo_depends(blobs[name]) if d not in builtin]
            pending += depends[name]
        order = module_load_order(depends, wanted)
        staged = Path(tmp) / "kernel"
        (staged / "modules").mkdir(parents=True)
        shutil.copy2(vmlinuz, staged / "vmlinuz")
        for name in order:
            (staged / "modules" / f"{name}.ko").write_bytes(blobs[name])
        (staged / "manifest.json").write_text(
            json.dumps({"package": package, "kernel_version": kernel_version, "modules": order})
        )
        _make_readable_tree(staged)
        kernel_dir.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        os.chmod(kernel_dir.parent, 0o755)
        os.replace(staged, kernel_dir)
    log.info("kernel %s cached with modules %s", kernel_version, " ".join(order))
    return kernel_dir


def _builtin_modules(module_root: Path) -> set[str]:
    path = module_root / "modules.builtin"
    if not path.exists():
        return set()
    return {_module_name(Path(line.strip()).name) for line in path.read_text().splitlines() if line}


def _module_name(file_name: str) -> str:
    return file_name.split(".ko")[0].replace("-", "_")


def _modinfo_fields(ko: bytes) -> list[bytes]:
    if ko[:4] != b"\x7fELF" or ko[4] != 2 or ko[5] != 1:
        raise ImageError("kernel module is not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", ko, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        name = struct.unpack_from("<I", ko, base)[0]
        offset, size = struct.unpack_from("<QQ", ko, base + 0x18)
        return name, offset, size

    _, str_offset, _ = section(shstrndx)
    for index in range(shnum):
        name_off, offset, size = section(index)
        end = ko.index(b"\0", str_offset + name_off)
        if ko[str_offset + name_off : end] == b".modinfo":
            return [f for f in ko[offset : offset + size].split(b"\0") if f]
    return []


def _zstd_decompress(path: Path) -> bytes:
    try:
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise ImageError(f"cannot decompress {path.name} (is zstd installed?): {err}") from None


# -- busybox ---------------------------------------------------------------------------------------


def _ensure_busybox(cache_dir: Path, run: Runner) -> Path:
    """A static busybox: the installed one if static, else one from the busybox-static package."""
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.exists() and _is_static_elf(candidate.read_bytes()):
            return candidate
    cached = cache_dir / "busybox" / "busybox"
    if cached.exists():
        return cached
    log.info("fetching %s", BUSYBOX_PACKAGE)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        root = _download_and_extract(BUSYBOX_PACKAGE, Path(tmp), run)
        found = next(
            (p for p in (root / "bin/busybox", root / "usr/bin/busybox") if p.exists()), None
        )
        if found is None:
            raise ImageError(f"{BUSYBOX_PACKAGE} holds no busybox binary")
        cached.parent.mkdir(exist_ok=True, mode=0o755)
        shutil.copy2(found, cached)
        os.chmod(cached, 0o755)
    return cached


def _is_static_elf(data: bytes) -> bool:
    """True for a 64-bit ELF executable without a program interpreter (statically linked)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(
        struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3  # PT_INTERP
        for i in range(phnum)
    )


# -- apt and the file system -----------------------------------------------------------------------


def _download_and_extract(package: str, workdir: Path, run: Runner) -> Path:
    """``apt-get download`` a package into ``workdir`` and extract it; returns the tree."""
    download = workdir / "download"
    download.mkdir()
    os.chmod(download, 0o777)  # apt drops privileges to _apt when it can
    try:
        run(["apt-get", "download", package], download)
    except ImageError:
        log.info("apt-get download %s failed; running apt-get update and retrying", package)
        run(["apt-get", "update"], None)
        run(["apt-get", "download", package], download)
    debs = sorted(download.glob("*.deb"))
    if not debs:
        raise ImageError(f"apt-get download {package} produced no .deb")
    root = workdir / "root"
    run(["dpkg-deb", "-x", str(debs[0]), str(root)], None)
    return root


def _apt_lists_state() -> str:
    """A fingerprint of apt's package lists (changes after ``apt-get update``)."""
    try:
        entries = sorted(
            (e.name, e.stat().st_mtime_ns, e.stat().st_size)
            for e in os.scandir(APT_LISTS)
            if e.is_file() and e.name.endswith("Packages")
        )
    except OSError:
        return ""
    return hashlib.sha256(repr(entries).encode()).hexdigest()[:16]


def _image_key(
    kernel_version: str, init: bytes, guestd_c: bytes, busybox: bytes, modules: Sequence[str]
) -> str:
    digest = hashlib.sha256(f"format={IMAGE_FORMAT};kernel={kernel_version};".encode())
    for part in (init, guestd_c, busybox, " ".join(modules).encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:12]


def _prune_images(images_dir: Path, keep: Path) -> None:
    """Remove stale base images (guests boot from their own copies, so none is in use)."""
    for stale in images_dir.iterdir():
        if stale != keep and stale.is_dir():
            log.info("removing stale lab image %s", stale.name)
            shutil.rmtree(stale, ignore_errors=True)


def _guest_source(name: str) -> bytes:
    return resources.files("presculpt.lab").joinpath("guest", name).read_bytes()


def _make_readable_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)


def _make_readable_tree(root: Path) -> None:
    """World-readable files and traversable directories, so QEMU (libvirt-qemu) can read them."""
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            p = os.path.join(dirpath, f)
            os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    """Serialise builders of one cache directory (several processes may call at once)."""
    with open(cache_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
