"""Dispatcher: send, retry until an outcome, hold for offline agents (bounded), expire clearly."""

from __future__ import annotations

import pytest

from presculpt.coordinator.config import DispatchConfig
from presculpt.coordinator.dispatch import Dispatcher, DispatchRejected
from presculpt.coordinator.model import Command, Outcome, Shape


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def dispatcher(clock):
    return Dispatcher(DispatchConfig(retry_interval_s=5, max_pending_per_host=2), clock)


def command(cid: str = "c1", host: str = "h1", deadline: float = 1030.0) -> Command:
    return Command(id=cid, host=host, kind="resize", issued_at=1000.0, deadline=deadline, vm="a",
                   target=Shape(vcpus=2))


def test_sent_at_once_and_resent_until_the_outcome(dispatcher, clock):
    sent = []
    dispatcher.connect("h1", sent.append)
    pending = dispatcher.submit(command())
    assert [c.id for c in sent] == ["c1"] and pending.state == "sent"
    clock.now += 4
    dispatcher.run_once()
    assert len(sent) == 1
    clock.now += 1
    dispatcher.run_once()
    assert len(sent) == 2 and pending.attempts == 2
    finished = []
    pending.add_done_callback(finished.append)
    dispatcher.record_outcome("h1", Outcome("c1", "APPLIED"))
    assert finished == [pending] and pending.outcome.status == "APPLIED"
    clock.now += 10
    dispatcher.run_once()
    assert len(sent) == 2
    assert dispatcher.pending_count("h1") == 0


def test_held_while_offline_and_delivered_on_reconnect(dispatcher):
    pending = dispatcher.submit(command())
    assert pending.state == "held"
    sent = []
    assert dispatcher.connect("h1", sent.append) == 1
    assert [c.id for c in sent] == ["c1"] and pending.state == "sent"


def test_hold_is_bounded(dispatcher):
    dispatcher.submit(command("c1"))
    dispatcher.submit(command("c2"))
    with pytest.raises(DispatchRejected, match="2 commands already pending for host 'h1'"):
        dispatcher.submit(command("c3"))
    dispatcher.submit(command("c4", host="h2"))  # another host has its own bound


def test_expires_with_a_clear_status(dispatcher, clock):
    held = dispatcher.submit(command("c1", deadline=1010.0))
    clock.now = 1010.0
    dispatcher.run_once()
    assert held.outcome.status == "EXPIRED" and "never delivered" in held.outcome.message
    dispatcher.connect("h1", lambda c: None)
    sent = dispatcher.submit(command("c2", deadline=1020.0))
    clock.now = 1021.0
    dispatcher.run_once()
    assert sent.outcome.status == "EXPIRED" and "no outcome from host 'h1' after 1 attempt" in sent.outcome.message
    # A late outcome changes nothing.
    assert dispatcher.record_outcome("h1", Outcome("c2", "APPLIED")) is None
    assert sent.outcome.status == "EXPIRED"


def test_same_command_id_is_the_same_command(dispatcher):
    sent = []
    dispatcher.connect("h1", sent.append)
    first = dispatcher.submit(command())
    assert dispatcher.submit(command()) is first
    dispatcher.record_outcome("h1", Outcome("c1", "UNCHANGED"))
    assert dispatcher.submit(command()) is first and len(sent) == 1


def test_a_replaced_stream_keeps_the_newer_sender(dispatcher):
    old, new = [], []
    dispatcher.connect("h1", old.append)
    dispatcher.connect("h1", new.append)
    dispatcher.disconnect("h1", old.append)  # the old stream ending must not unregister the new one
    assert dispatcher.connected("h1")
    dispatcher.submit(command())
    assert len(new) == 1 and not old
