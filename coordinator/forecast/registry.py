"""Versioned checkpoints of the forecast model, and the rule that decides which one serves.

A folder holds one ``lstm-<UTC time>-<n>.pt`` file per version (``LstmForecaster.save``) with a
``.json`` sidecar of the same name: how it was trained (window, series, seconds, epochs), the
backtest scores of the candidate and of the model that was current then, its status and its
parent (the version it was warm-started from). ``current.json`` names the version that serves; it
is the authority (a sidecar's status is informative only), and it is replaced atomically, so a
crash leaves either the old or the new version current, never none.

Promotion rule: a candidate replaces the current model only if it forecasts the held-out data
better. For each metric scored for both models (CPU, and memory when both have it), take the
relative change of the pinball loss, ``(candidate - current) / current``; the candidate is better
when the mean of those changes is below zero. A 10% better CPU loss with a 4% worse memory loss
(mean -3%) is promoted; a model that is better on neither is kept aside, with a warning naming both
scores. Without a current model the first candidate is promoted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from presculpt.errors import UserError

if TYPE_CHECKING:  # torch is imported when a checkpoint is first loaded (see _load_checkpoint)
    from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster

log = logging.getLogger(__name__)

CURRENT_FILE = "current.json"
VERSION_RE = re.compile(r"^lstm-(\d{8}T\d{6}Z)-(\d+)$")
COMPARED_METRICS = ("cpu_cores", "memory_mib")
CURRENT, KEPT_ASIDE, RETIRED = "current", "kept-aside", "retired"

Scores = Mapping[str, Mapping[str, Any]]  # evaluate.backtest: {metric: {"pinball": ..., ...}}


class RegistryError(UserError):
    """The model folder or a checkpoint cannot be used; the message is one line."""


@dataclass(frozen=True)
class ModelVersion:
    """One checkpoint: ``info`` is its sidecar (training, scores, status, parent)."""

    version: str
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def seq(self) -> int:
        return int(self.version.rsplit("-", 1)[1])

    @property
    def status(self) -> str:
        return str(self.info.get("status", ""))


@dataclass(frozen=True)
class Promotion:
    """What ``promote_if_better`` decided, and why (``change``: mean relative change of pinball)."""

    version: ModelVersion
    promoted: bool
    change: float | None
    reason: str


def compare(candidate: Scores, current: Scores | None) -> tuple[bool, float | None, str]:
    """The promotion rule (see the module docstring): (better, mean relative change, reason)."""
    if current is None:
        return True, None, "no current model"
    changes = []
    for metric in COMPARED_METRICS:
        new = _pinball(candidate, metric)
        old = _pinball(current, metric)
        if new is None or old is None:
            continue
        if old > 0:
            changes.append((new - old) / old)
        else:
            changes.append(0.0 if new <= 0 else math.inf)
    if not changes:
        return False, None, "no metric was scored for both models"
    change = sum(changes) / len(changes)
    if change < 0:
        return True, change, f"pinball loss {-change:.1%} lower than the current model's"
    if change > 0:
        return False, change, f"pinball loss {change:.1%} higher than the current model's"
    return False, change, "pinball loss no lower than the current model's"


def _pinball(scores: Scores, metric: str) -> float | None:
    value = scores.get(metric, {}).get("pinball")
    return float(value) if value is not None and math.isfinite(value) else None


def describe(scores: Scores | None) -> str:
    """``cpu_cores 0.1234, memory_mib 56.7`` (for log lines)."""
    if not scores:
        return "none"
    return ", ".join(f"{m} {_pinball(scores, m):.4g}" for m in COMPARED_METRICS if _pinball(scores, m) is not None)


class ModelRegistry:
    """The checkpoint folder. Not thread-safe: one writer (the retrain job, or start-up)."""

    def __init__(self, directory: str | Path, keep_versions: int = 5, clock: Callable[[], float] = time.time):
        self.directory = Path(directory)
        self.keep_versions = keep_versions
        self.clock = clock

    # -- reading -------------------------------------------------------------------------
    def versions(self) -> list[ModelVersion]:
        """Every checkpoint in the folder, oldest first."""
        if not self.directory.is_dir():
            return []
        out = []
        for path in self.directory.glob("lstm-*.pt"):
            if VERSION_RE.match(path.stem):
                out.append(ModelVersion(path.stem, path, self._read_json(path.with_suffix(".json")) or {}))
        return sorted(out, key=lambda v: v.seq)

    def current(self) -> ModelVersion | None:
        """The version ``current.json`` names, or None when no model was promoted yet."""
        pointer = self._read_json(self.directory / CURRENT_FILE)
        if pointer is None:
            return None
        name = str(pointer.get("version", ""))
        path = self.directory / f"{name}.pt"
        if not VERSION_RE.match(name) or not path.exists():
            raise RegistryError(f"{self.directory / CURRENT_FILE} names version {name!r}, which has no "
                                f"checkpoint in {self.directory}")
        return ModelVersion(name, path, self._read_json(path.with_suffix(".json")) or {})

    def load(self, version: ModelVersion) -> "LstmForecaster":
        """Load a version; its forecasts carry the version as their model name."""
        forecaster = _load_checkpoint(version.path)
        forecaster.name = version.version
        return forecaster

    def load_current(self) -> "tuple[ModelVersion, LstmForecaster] | None":
        current = self.current()
        if current is None:
            return None
        return current, self.load(current)

    # -- writing -------------------------------------------------------------------------
    def import_checkpoint(self, path: str | Path) -> ModelVersion:
        """Copy a checkpoint made elsewhere into the folder as the current version (the operator's
        seed); only into a folder without a current model."""
        if self.current() is not None:
            raise RegistryError(f"{self.directory} already has a current model; import only seeds an empty one")
        forecaster = _load_checkpoint(Path(path))
        info = {"source": "imported", "imported_from": str(Path(path).resolve()),
                "training": forecaster.metadata}
        version = self._add(forecaster, info, CURRENT)
        self._point_at(version)
        log.info("imported %s as model version %s", path, version.version)
        return version

    def promote_if_better(self, candidate: "LstmForecaster", candidate_scores: Scores,
                          current_scores: Scores | None, training: Mapping[str, Any] | None = None,
                          parent: str | None = None) -> Promotion:
        """Store ``candidate`` as a new version, and make it current if it beats the current model on
        the promotion rule (``current_scores`` None: there is no current model). Prunes old versions."""
        try:
            previous = self.current()
        except RegistryError as err:  # a broken pointer must not block every retrain: replace it
            log.warning("%s; the candidate is judged as if there were no current model", err)
            previous = None
        if previous is None:
            current_scores = None
        better, change, reason = compare(candidate_scores, current_scores)
        info = {"source": "trained", "parent": parent, "training": dict(training or {}),
                "scores": {"candidate": candidate_scores, "current": current_scores,
                           "current_version": previous.version if previous else None},
                "decision": reason}
        version = self._add(candidate, info, CURRENT if better else KEPT_ASIDE)
        if better:
            self._point_at(version)
            if previous is not None:
                self._set_status(previous, RETIRED)
            log.info("model %s promoted (%s): pinball %s, was %s (%s)", version.version, reason,
                     describe(candidate_scores), describe(current_scores),
                     previous.version if previous else "no model")
        else:
            log.warning("model %s kept aside, %s stays current: %s (candidate pinball %s, current %s)",
                        version.version, previous.version if previous else "none", reason,
                        describe(candidate_scores), describe(current_scores))
        self.prune()
        return Promotion(version, better, change, reason)

    def prune(self) -> list[str]:
        """Delete kept-aside and retired versions beyond ``keep_versions`` of each (oldest first)."""
        current = self.current()
        deleted = []
        for status in (KEPT_ASIDE, RETIRED):
            old = [v for v in self.versions()
                   if (current is None or v.version != current.version) and self._status(v, current) == status]
            for version in old[:max(len(old) - self.keep_versions, 0)]:
                version.path.unlink(missing_ok=True)
                version.path.with_suffix(".json").unlink(missing_ok=True)
                deleted.append(version.version)
        if deleted:
            log.info("deleted old model versions %s", ", ".join(deleted))
        return deleted

    # -- internals -----------------------------------------------------------------------
    @staticmethod
    def _status(version: ModelVersion, current: ModelVersion | None) -> str:
        """The status that holds: the pointer wins over a sidecar a crash left saying "current"."""
        if current is not None and version.version == current.version:
            return CURRENT
        return RETIRED if version.status == CURRENT else version.status

    def _add(self, forecaster: "LstmForecaster", info: dict[str, Any], status: str) -> ModelVersion:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RegistryError(f"cannot create the model folder {self.directory}: {err.strerror}") from None
        existing = self.versions()
        seq = existing[-1].seq + 1 if existing else 1
        now = self.clock()
        name = f"lstm-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{seq}"
        path = self.directory / f"{name}.pt"
        forecaster.name = name
        full = {"version": name, "created_at": now, "status": status, **info}
        try:
            forecaster.save(path)
        except OSError as err:
            raise RegistryError(f"cannot write model version {path}: {err.strerror or err}") from None
        _write_json(path.with_suffix(".json"), full)
        return ModelVersion(name, path, full)

    def _point_at(self, version: ModelVersion) -> None:
        _write_json(self.directory / CURRENT_FILE, {"version": version.version, "since": self.clock()})

    def _set_status(self, version: ModelVersion, status: str) -> None:
        info = dict(version.info, status=status)
        _write_json(version.path.with_suffix(".json"), info)

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise RegistryError(f"cannot read {path}: {err}") from None
        if not isinstance(data, dict):
            raise RegistryError(f"{path} is not a JSON object")
        return data


def _load_checkpoint(path: Path) -> "LstmForecaster":
    # Imported here: torch takes seconds to import, and a coordinator without a model never needs it.
    from presculpt.coordinator.forecast.lstm.predictor import LstmForecaster

    if not path.is_file():
        raise RegistryError(f"model checkpoint {path} does not exist")
    try:
        return LstmForecaster.load(path)
    except ValueError as err:
        raise RegistryError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a foreign or damaged file
        raise RegistryError(f"cannot load model checkpoint {path}: {type(err).__name__}: {err}") from None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically (a temporary file renamed over the target, both fsynced)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True, default=_jsonable)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power loss
        finally:
            os.close(fd)
    except OSError as err:
        raise RegistryError(f"cannot write {path}: {err.strerror or err}") from None


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays in scores and metadata."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
