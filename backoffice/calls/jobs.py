"""Jobs of the call centre: the planner, late callbacks and the SLA watch."""

from __future__ import annotations

from backoffice.calls import service, sla


def replan_calls() -> int:
    """Run after events (task opened, attempt logged, shift or absence changed) and periodically."""
    return len(service.replan().assignments)


def alert_at_risk_calls() -> int:
    return sla.alert_at_risk()
