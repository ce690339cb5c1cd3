"""A pool of warm shadow VMs, created ahead of need and handed out at once.

Each shadow is a domain made from a template and kept in one warm state; the states trade host
memory for activation time:

- ``paused``: booted, then paused. Holds its memory; activation is a resume.
- ``saved``: booted, then saved to the host's managed-save image. Holds disk, not memory;
  activation restores the image.
- ``defined``: only defined. Holds nothing; activation is a cold boot.

Shadows carry Presculpt metadata (``role="shadow"``, their pool and warm state), so the pool's
contents are read back from the hypervisor, never kept in memory. Activation resumes or boots one,
waits until its balloon driver reports (the guest runs), resizes it to the requested shape and hands
it over: the metadata then says ``role="active"`` with the assigned name. libvirt cannot rename a
running domain, so the hand-over name lives in the metadata (``assigned_name``).
"""

from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from presculpt.agent.config import WARM_STATES, WarmState
from presculpt.agent.hypervisor.base import (
    METADATA_NAMESPACE,
    METADATA_PREFIX,
    Hypervisor,
    HypervisorError,
)
from presculpt.agent.model import DomainInfo, TargetShape
from presculpt.agent.resize import ResizeApplied, Resizer

log = logging.getLogger(__name__)

ROLE_SHADOW = "shadow"
ROLE_ACTIVE = "active"
NAME_PREFIX = "presculpt-shadow"
# Preference when activating: the fastest warm state first.
ACTIVATION_ORDER: tuple[WarmState, ...] = ("paused", "saved", "defined")


class ShadowPoolError(Exception):
    """A pool operation could not be carried out (no shadow available, a shadow did not boot)."""


@dataclass(frozen=True)
class Shadow:
    name: str
    pool: str
    warm_state: WarmState
    state: str  # libvirt's view: paused, shutoff, running...


@dataclass(frozen=True)
class Activation:
    shadow: str
    assigned_name: str
    warm_state: WarmState
    activate_seconds: float  # from the call until the guest runs and reports
    resize: ResizeApplied | None


def shadow_xml(template_xml: str, name: str, pool: str, warm_state: WarmState) -> str:
    """The domain XML of one shadow: the template with its name set, no uuid, shadow metadata."""
    ET.register_namespace(METADATA_PREFIX, METADATA_NAMESPACE)
    root = ET.fromstring(template_xml.replace("{name}", name))
    if root.tag != "domain":
        raise ShadowPoolError("the shadow template is not a libvirt <domain> definition")
    name_el = root.find("name")
    if name_el is None:
        name_el = ET.SubElement(root, "name")
    name_el.text = name
    for uuid_el in root.findall("uuid"):
        root.remove(uuid_el)
    metadata = root.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(root, "metadata")
    for old in [el for el in metadata if el.tag.startswith(f"{{{METADATA_NAMESPACE}}}")]:
        metadata.remove(old)
    ET.SubElement(
        metadata,
        f"{{{METADATA_NAMESPACE}}}vm",
        {"role": ROLE_SHADOW, "pool": pool, "warm_state": warm_state},
    )
    return ET.tostring(root, encoding="unicode")


class ShadowPool:
    """Fill, list, activate and drain the shadows of one pool on one host."""

    def __init__(
        self,
        hypervisor: Hypervisor,
        resizer: Resizer,
        template_xml: str,
        pool: str = "default",
        ready_timeout_s: float = 180.0,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.hypervisor = hypervisor
        self.resizer = resizer
        self.template_xml = template_xml
        self.pool = pool
        self.ready_timeout_s = ready_timeout_s
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.sleep = sleep

    # -- reading -------------------------------------------------------------------------------
    def list(self) -> list[Shadow]:
        return [_as_shadow(d) for d in self.hypervisor.list_domains() if self._is_ours(d)]

    def _is_ours(self, domain: DomainInfo) -> bool:
        md = domain.metadata
        return md.get("role") == ROLE_SHADOW and md.get("pool") == self.pool

    # -- filling -------------------------------------------------------------------------------
    def fill(self, size: int, warm_state: WarmState) -> list[Shadow]:
        """Create shadows in ``warm_state`` until the pool holds ``size`` of them; return the new ones."""
        if warm_state not in WARM_STATES:
            raise ShadowPoolError(f"unknown warm state {warm_state!r}; use {', '.join(WARM_STATES)}")
        existing = self.list()
        missing = size - sum(1 for s in existing if s.warm_state == warm_state)
        if missing <= 0:
            return []
        taken = {s.name for s in existing} | {d.name for d in self.hypervisor.list_domains()}
        names = []
        index = 1
        while len(names) < missing:
            candidate = f"{NAME_PREFIX}-{self.pool}-{index}"
            if candidate not in taken:
                names.append(candidate)
            index += 1
        created = []
        for name in names:
            self.hypervisor.define(shadow_xml(self.template_xml, name, self.pool, warm_state))
            created.append(name)
            if warm_state != "defined":
                self.hypervisor.start(name)
        log.info("pool %s: defined %d %s shadow(s): %s", self.pool, len(names), warm_state, ", ".join(names))
        if warm_state != "defined":
            for name in created:
                self._wait_running(name, since=0.0)
                if warm_state == "paused":
                    self.hypervisor.pause(name)
                else:
                    self.hypervisor.managed_save(name)
                log.info("pool %s: %s is warm (%s)", self.pool, name, warm_state)
        return [s for s in self.list() if s.name in set(created)]

    # -- activation ----------------------------------------------------------------------------
    def activate(
        self,
        assigned_name: str,
        shape: TargetShape | None = None,
        metadata: Mapping[str, str] | None = None,
        warm_state: WarmState | None = None,
    ) -> Activation:
        """Hand out the warmest available shadow (or one in ``warm_state``), running and resized."""
        if not assigned_name:
            raise ShadowPoolError("an activated shadow needs a name to be handed over under")
        shadow = self._pick(warm_state)
        started = self.monotonic()
        since = self.wall_clock()
        if shadow.state == "paused":
            self.hypervisor.resume(shadow.name)
        elif shadow.state in ("shutoff", "crashed"):
            self.hypervisor.start(shadow.name)  # restores the managed-save image when present
        self._wait_running(shadow.name, since=since)
        seconds = self.monotonic() - started
        resize = None
        if shape is not None and not shape.is_empty():
            try:
                resize = self.resizer.apply(shadow.name, shape)
            except Exception:
                self._rewarm(shadow)  # a refused activation leaves the pool as it was
                raise
        values = {"role": ROLE_ACTIVE, "assigned_name": assigned_name, "warm_state": shadow.warm_state}
        values.update(metadata or {})
        self.hypervisor.set_metadata(shadow.name, values)
        log.info(
            "pool %s: activated %s (%s) as %s in %.2f s",
            self.pool, shadow.name, shadow.warm_state, assigned_name, seconds,
        )
        return Activation(shadow.name, assigned_name, shadow.warm_state, seconds, resize)

    def _rewarm(self, shadow: Shadow) -> None:
        try:
            if shadow.warm_state == "paused":
                self.hypervisor.pause(shadow.name)
            elif shadow.warm_state == "saved":
                self.hypervisor.managed_save(shadow.name)
            else:
                self.hypervisor.destroy(shadow.name)
        except HypervisorError as err:
            log.warning("pool %s: could not return %s to %s: %s", self.pool, shadow.name, shadow.warm_state, err)

    def _pick(self, warm_state: WarmState | None) -> Shadow:
        shadows = self.list()
        order = ACTIVATION_ORDER if warm_state is None else (warm_state,)
        for state in order:
            for shadow in sorted(shadows, key=lambda s: s.name):
                if shadow.warm_state == state:
                    return shadow
        wanted = "" if warm_state is None else f" in state {warm_state}"
        raise ShadowPoolError(f"pool {self.pool} has no shadow{wanted} to activate; fill it first")

    def _wait_running(self, name: str, since: float) -> None:
        """Wait until the guest runs and its balloon driver reported after ``since`` (host time)."""
        deadline = self.monotonic() + self.ready_timeout_s
        while True:
            info = self.hypervisor.domain_info(name)
            balloon = info.balloon
            if (
                info.state == "running"
                and balloon is not None
                and balloon.reported
                and (balloon.last_update or 0) >= int(since)
            ):
                return
            if info.state in ("shutoff", "crashed"):
                raise ShadowPoolError(f"shadow {name} stopped ({info.state}) while starting")
            if self.monotonic() > deadline:
                raise ShadowPoolError(
                    f"shadow {name} did not report within {self.ready_timeout_s:g} s "
                    f"(is the balloon driver with statistics enabled in the template?)"
                )
            self.sleep(0.1)

    # -- draining ------------------------------------------------------------------------------
    def drain(self) -> list[str]:
        """Remove every shadow of the pool (not the activated ones); return their names."""
        removed = []
        for shadow in self.list():
            try:
                self.hypervisor.destroy(shadow.name)
                self.hypervisor.undefine(shadow.name)
            except HypervisorError as err:
                log.warning("pool %s: could not remove %s: %s", self.pool, shadow.name, err)
                continue
            removed.append(shadow.name)
        log.info("pool %s: drained %d shadow(s)", self.pool, len(removed))
        return removed


def _as_shadow(domain: DomainInfo) -> Shadow:
    warm = domain.metadata.get("warm_state", "defined")
    return Shadow(
        name=domain.name,
        pool=domain.metadata.get("pool", ""),
        warm_state=warm if warm in WARM_STATES else "defined",  # type: ignore[arg-type]
        state=domain.state,
    )
