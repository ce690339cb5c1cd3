"""Replay: the planner and the autoscalers operators use today, run against a simulated hypervisor
driven by a trace in the canonical format (traces/FORMAT.md), scored with one set of definitions.

``trace`` loads a trace onto one time grid, ``baselines`` holds the reference policies (static,
reactive, VPA, Autopilot), ``presculpt`` drives the forecaster and the planner, ``score`` computes
violation, unmet demand, slack and resizes, and ``run`` ties them together for ``presculpt replay``.
"""
