"""Generate the Python gRPC stubs from ``protos/`` with grpcio-tools: ``python -m presculpt.protos_gen``.

The stubs are checked in next to the ``.proto`` files (importable as ``presculpt.v1.*_pb2``);
``tests/test_protos.py`` regenerates them into a temporary folder and fails when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[1] / "protos"
PROTO_DIR = PROTO_ROOT / "presculpt" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_root: Path = PROTO_ROOT) -> list[Path]:
    """Write the stubs of every .proto under ``out_root`` (mirroring ``presculpt/v1``); returns them."""
    import grpc_tools
    from grpc_tools import protoc

    out_root.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    code = protoc.main([
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *sources,
    ])
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code}")
    out_dir = out_root / "presculpt" / "v1"
    return sorted(p for p in out_dir.iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    for path in generate():
        print(path.relative_to(PROTO_ROOT.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
