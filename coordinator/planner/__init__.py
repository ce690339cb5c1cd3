"""The planner: pure rules that turn forecasts into actions (see planner.py)."""

from presculpt.coordinator.planner.model import (
    Action, Allocation, CostModel, CustomerQuota, Forecast, HostSnapshot, Plan, PlannerConfig, Snapshot,
    TierPolicy, Unmet, VmMemory, VmSnapshot)
from presculpt.coordinator.planner.planner import plan

__all__ = ["Action", "Allocation", "CostModel", "CustomerQuota", "Forecast", "HostSnapshot", "Plan", "PlannerConfig",
           "Snapshot", "TierPolicy", "Unmet", "VmMemory", "VmSnapshot", "plan"]
