"""The supervisors' dashboard page and its CSV exports: parse the period, ask the service, render."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from flask import Response, abort, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup

from backoffice.admin import RoleBaseView
from backoffice.calls.models import CallOutcome
from backoffice.dashboard import charts, service
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.staff.models import Role
from backoffice.web import local as staff_local
from backoffice.web import staff_actor


class QueuePage(NamedTuple):
    """A queue's name, what counts in it, and the list page that works it (with its filter)."""

    label: str
    counts: str
    endpoint: str
    query: dict[str, Any]


QUEUES = {
    "legal_review": QueuePage(
        _l("Legal review"),
        _l("Applications submitted or in review"),
        "review.index",
        {"status": ["submitted", "in_review"]},
    ),
    "call_tasks": QueuePage(_l("Call tasks"), _l("Open or in a call"), "call_sla.index", {}),
    "association_cases": QueuePage(
        _l("Association cases"), _l("Open or waiting for the customer"), "association.index", {}
    ),
    "outbox_pending": QueuePage(
        _l("Outbox pending"), _l("Messages not yet delivered"), "outbox.index_view", {}
    ),
}
STEPS = {
    "registered": _l("Registered"),
    "verified": _l("Email verified"),
    "linked": _l("Linked to a policyholder"),
    "submitted": _l("Submitted"),
    "approved": _l("Approved by legal"),
    "validated": _l("Validated by phone"),
    "completed": _l("Sign-up completed"),
}
OUTCOMES = {
    CallOutcome.VALIDATED: _l("Validated"),
    CallOutcome.NO_ANSWER: _l("No answer"),
    CallOutcome.CALLBACK_REQUESTED: _l("Call back"),
    CallOutcome.DATA_MISMATCH: _l("Data mismatch"),
}


def _period_error(error: service.PeriodError) -> str:
    if error.code == "to_before_from":
        return _("The end date is before the start date.")
    if error.code == "too_long":
        return _("A period can be at most %(days)d days long.", days=service.MAX_DAYS)
    return _("Dates must be real dates written as YYYY-MM-DD.")


def local(moment: datetime | None) -> str:
    """A UTC instant as staff read it: in the business time zone."""
    return "—" if moment is None else staff_local(moment)


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f} %"


def age(value: timedelta | None) -> str:
    """How long the oldest item has waited, to the minute."""
    if value is None:
        return "—"
    minutes = max(int(value.total_seconds() // 60), 0)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return _("%(days)d d %(hours)d h", days=days, hours=hours)
    if hours:
        return _("%(hours)d h %(minutes)d min", hours=hours, minutes=minutes)
    return _("%(minutes)d min", minutes=minutes)


def _funnel_bars(steps: list[service.FunnelStep]) -> list[charts.Bar]:
    bars = []
    for step in steps:
        text = str(step.count)
        if step.from_previous is not None or step.from_first is not None:
            text = _(
                "%(count)d · %(previous)s of previous · %(first)s of first",
                count=step.count,
                previous=percent(step.from_previous),
                first=percent(step.from_first),
            )
        bars.append(charts.Bar(str(STEPS[step.key]), step.count, text))
    return bars


def _charts(data: service.Overview) -> dict[str, Markup]:
    per_agent: Counter[tuple[str, int]] = Counter()
    for row in data.calls_per_agent:
        per_agent[row.agent_name, row.agent_id] += row.calls
    return {
        "queues": charts.bar_chart(
            [charts.Bar(str(QUEUES[row.key].label), row.size, str(row.size)) for row in data.queues],
            chart_id="chart-queues",
            title=_("Items waiting per queue"),
        ),
        "sla": charts.bar_chart(
            [
                charts.Bar(
                    _("Last %(days)d days", days=a.days),
                    (a.rate or 0) * 100,
                    _("%(rate)s (%(met)d of %(due)d met)", rate=percent(a.rate), met=a.met, due=a.due),
                )
                for a in data.sla.attainments
            ],
            chart_id="chart-sla",
            title=_("Call promises met on time"),
            largest=100,
        ),
        "agents": charts.bar_chart(
            [charts.Bar(name, calls, str(calls)) for (name, _id), calls in sorted(per_agent.items())],
            chart_id="chart-agents",
            title=_("Calls per agent in the period"),
        ),
        "account_funnel": charts.funnel_chart(
            _funnel_bars(data.account_funnel),
            chart_id="chart-account-funnel",
            title=_("Individual accounts: registered, verified, linked"),
        ),
        "representative_funnel": charts.funnel_chart(
            _funnel_bars(data.representative_funnel),
            chart_id="chart-representative-funnel",
            title=_("Representatives: submitted, approved, validated, completed"),
        ),
    }


class DashboardView(RoleBaseView):
    """Supervisors and admins see the queues, the call SLA, calls per agent and the funnels."""

    allowed_roles = (Role.SUPERVISOR, Role.ADMIN)

    def _reachable(self) -> set[str]:
        """The list pages this user may open (the menu knows, role by role)."""
        urls = set()
        for item in self.admin.menu():
            for entry in item.get_children() if item.is_category() else [item]:
                if entry.is_accessible() and entry.is_visible():
                    urls.add(entry.get_url())
        return urls

    def _queue_links(self, reachable: set[str]) -> dict[str, str | None]:
        links: dict[str, str | None] = {}
        for key, queue in QUEUES.items():
            page = url_for(queue.endpoint)
            links[key] = url_for(queue.endpoint, **queue.query) if page in reachable else None
        return links

    @expose("/")
    def index(self):
        now = utcnow()
        error = None
        try:
            period = service.parse_period(request.args.get("from"), request.args.get("to"), now=now)
        except service.PeriodError as exc:
            error = _period_error(exc)
            period = service.default_period(now)
        data = service.overview(period, now=now)
        reachable = self._reachable()
        sla_page = url_for("call_sla.index")
        page = self.render(
            "admin/dashboard.html",
            data=data,
            error=error,
            typed={"from": request.args.get("from", ""), "to": request.args.get("to", "")},
            queues=QUEUES,
            queue_links=self._queue_links(reachable),
            sla_page=sla_page if sla_page in reachable else None,
            steps=STEPS,
            outcomes=OUTCOMES,
            exports={
                table: url_for(
                    ".export",
                    table=table,
                    **{"from": period.start.isoformat(), "to": period.end.isoformat()},
                )
                for table in service.TABLES
            },
            charts=_charts(data),
            percent=percent,
            age=age,
            local=local,
        )
        return page, 400 if error else 200

    @expose("/export/<table>.csv")
    def export(self, table: str):
        if table not in service.TABLES:
            abort(404)
        now = utcnow()
        try:
            period = service.parse_period(request.args.get("from"), request.args.get("to"), now=now)
        except service.PeriodError as exc:
            return Response(_period_error(exc), status=400, content_type="text/plain; charset=utf-8")
        exported = service.export(table, period, now=now, actor=staff_actor())
        db.session.commit()
        return Response(
            exported.content,
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{exported.filename}"'},
        )
