"""A fan-out of events to live watchers. Each watcher has a bounded queue; a watcher that falls
behind misses events (counted) rather than slowing ingestion. Call from the event loop only."""

from __future__ import annotations

import asyncio
import logging

from presculpt.coordinator.model import Event

log = logging.getLogger(__name__)


class Subscription:
    def __init__(self, host: str, size: int):
        self.host = host
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    async def get(self) -> Event:
        return await self.queue.get()


class EventBus:
    def __init__(self, queue_size: int = 1000):
        self.queue_size = queue_size
        self._subscribers: set[Subscription] = set()

    @property
    def active(self) -> bool:
        """True when someone watches (publishers skip building events otherwise)."""
        return bool(self._subscribers)

    def subscribe(self, host: str = "") -> Subscription:
        sub = Subscription(host, self.queue_size)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        if sub.dropped:
            log.warning("a watcher missed %d events (too slow)", sub.dropped)

    def publish(self, event: Event) -> None:
        for sub in self._subscribers:
            if sub.host and sub.host != event.host:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped += 1
