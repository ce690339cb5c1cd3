"""The checked-in gRPC stubs match what `python -m presculpt.protos_gen` generates from protos/."""

from __future__ import annotations

from presculpt import protos_gen


def test_generated_stubs_are_fresh(tmp_path):
    generated = protos_gen.generate(tmp_path)
    assert generated, "no stubs generated"
    stale = []
    for path in generated:
        checked_in = protos_gen.PROTO_DIR / path.name
        if not checked_in.exists() or checked_in.read_bytes() != path.read_bytes():
            stale.append(path.name)
    assert not stale, f"stale stubs {stale}: run `python -m presculpt.protos_gen`"
    protos = {p.stem for p in protos_gen.proto_files()}
    assert protos == {"model", "agent", "api"}
