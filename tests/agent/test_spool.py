"""BatchSpool: sequence numbers survive restarts, acknowledged batches go, the spool is bounded."""

from __future__ import annotations

from presculpt.agent.spool import BatchSpool


def payload(seq: int) -> bytes:
    return f"batch {seq}".encode()


def test_seq_survives_reopen_and_acks_forget(tmp_path):
    spool = BatchSpool(tmp_path / "s.db")
    spool.open()
    assert [spool.append(payload) for _ in range(3)] == [1, 2, 3]
    spool.ack(2)
    spool.close()
    spool = BatchSpool(tmp_path / "s.db")
    spool.open()
    assert spool.pending() == [(1, b"batch 1"), (3, b"batch 3")]
    assert spool.pending(after_seq=1) == [(3, b"batch 3")]
    assert spool.append(payload) == 4
    spool.close()


def test_bounded_drops_the_oldest(tmp_path):
    spool = BatchSpool(tmp_path / "s.db", max_batches=3)
    spool.open()
    for _ in range(5):
        spool.append(payload)
    assert [seq for seq, _ in spool.pending()] == [3, 4, 5] and spool.dropped == 2
    spool.close()


def test_welcome_drops_what_is_stored_and_moves_seq_past_it(tmp_path):
    spool = BatchSpool(tmp_path / "s.db")
    spool.open()
    for _ in range(3):
        spool.append(payload)
    spool.acknowledge_through(2)
    assert [seq for seq, _ in spool.pending()] == [3]
    # The coordinator knows more than this spool (its file was lost): continue after it.
    spool.acknowledge_through(40)
    assert len(spool) == 0 and spool.append(payload) == 41
    spool.close()
