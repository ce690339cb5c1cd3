"""The connection registry: which agents are connected now, since when, with which stream.

A host that reconnects replaces its older stream (the newest wins); the older stream's end then
leaves the registry alone. Call from the event loop only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from presculpt.coordinator.model import Command

log = logging.getLogger(__name__)


@dataclass
class AgentConnection:
    agent_id: str
    peer: str
    connected_at: float
    send: Callable[[Command], None]
    close: Callable[[str], None]  # ends the stream with a reason


class ConnectionRegistry:
    def __init__(self) -> None:
        self._connections: dict[str, AgentConnection] = {}

    def register(self, conn: AgentConnection) -> AgentConnection | None:
        """Add a connection; returns the one it replaced (already told to close)."""
        old = self._connections.get(conn.agent_id)
        self._connections[conn.agent_id] = conn
        if old is not None:
            log.warning("agent %s reconnected from %s; closing its older stream from %s",
                        conn.agent_id, conn.peer, old.peer)
            old.close("replaced by a newer stream of the same agent")
        log.info("agent %s connected from %s", conn.agent_id, conn.peer)
        return old

    def unregister(self, conn: AgentConnection) -> bool:
        """Remove the connection if it is still the current one for its agent."""
        if self._connections.get(conn.agent_id) is conn:
            del self._connections[conn.agent_id]
            log.info("agent %s disconnected", conn.agent_id)
            return True
        return False

    def get(self, agent_id: str) -> AgentConnection | None:
        return self._connections.get(agent_id)

    def connected(self) -> list[str]:
        return sorted(self._connections)

    def __len__(self) -> int:
        return len(self._connections)
