"""The "Agent shifts" page: supervisors and admins give call agents weekly shifts and absences.

Views parse the forms, call `backoffice.calls.staffing` (where every rule lives) and render. The
forms only offer what the window allows (its open weekdays, times every 30 minutes from opening
to closing), but the service checks again: a form is not a rule. Absences are typed in business
local time and turned into UTC by `staffing.local_instant`. Deleting asks on a confirmation
page, so no script is needed.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from flask import abort, flash, redirect, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, SelectField, StringField
from wtforms.validators import InputRequired, Length

from backoffice.admin import RoleBaseView
from backoffice.calls import staffing
from backoffice.calls.calendar import BusinessCalendar
from backoffice.calls.models import AgentAbsence, AgentShift
from backoffice.extensions import db
from backoffice.review.service import calendar
from backoffice.staff.models import Role, StaffUser
from backoffice.web import local, staff_actor

WEEKDAY_NAMES = (
    _l("Monday"),
    _l("Tuesday"),
    _l("Wednesday"),
    _l("Thursday"),
    _l("Friday"),
    _l("Saturday"),
    _l("Sunday"),
)
TIME_STEP = timedelta(minutes=30)
LOCAL_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
REQUIRED = _l("Required.")


class ShiftEditForm(FlaskForm):
    weekday = SelectField(_l("Day"), coerce=int, validators=[InputRequired(REQUIRED)])
    starts = SelectField(_l("From"), validators=[InputRequired(REQUIRED)])
    ends = SelectField(_l("To"), validators=[InputRequired(REQUIRED)])


class ShiftForm(ShiftEditForm):
    agent_id = SelectField(_l("Agent"), coerce=int, validators=[InputRequired(REQUIRED)])


class AbsenceForm(FlaskForm):
    agent_id = SelectField(_l("Agent"), coerce=int, validators=[InputRequired(REQUIRED)])
    starts_at = DateTimeLocalField(
        _l("From"), format=LOCAL_FORMATS, validators=[InputRequired(REQUIRED)], description=_l("local time")
    )
    ends_at = DateTimeLocalField(
        _l("Until"), format=LOCAL_FORMATS, validators=[InputRequired(REQUIRED)], description=_l("local time")
    )
    reason = StringField(
        _l("Reason"),
        validators=[InputRequired(REQUIRED), Length(max=staffing.REASON_MAX_LENGTH)],
        description=_l("e.g. Annual leave"),
    )


class ConfirmForm(FlaskForm):
    """A delete confirmation: only the CSRF token."""


def time_options(business: BusinessCalendar) -> list[tuple[str, str]]:
    """HH:MM every 30 minutes from opening to closing, both included: only times inside the window."""
    day = date(2000, 1, 3)  # any day: naive wall-clock arithmetic, no time zone involved
    moment, closes = datetime.combine(day, business.opens), datetime.combine(day, business.closes)
    options = []
    while moment < closes:
        options.append(moment.strftime("%H:%M"))
        moment += TIME_STEP
    options.append(closes.strftime("%H:%M"))
    return [(value, value) for value in options]


def _weekday_options(business: BusinessCalendar) -> list[tuple[int, str]]:
    return [(day, WEEKDAY_NAMES[day]) for day in business.open_weekdays]


def _agent_options() -> list[tuple[int, str]]:
    return [(agent.id, agent.name) for agent in staffing.call_agents()]


def _hours(form: ShiftEditForm, business: BusinessCalendar) -> None:
    form.weekday.choices = _weekday_options(business)
    form.starts.choices = time_options(business)
    form.ends.choices = time_options(business)


def _refuse(form: FlaskForm, error: staffing.StaffingError) -> None:
    """Show the service's refusal next to the field it is about, else above the form."""
    target = getattr(form, error.field, None) if error.field else None
    if target is None:
        form.form_errors.append(error.message)
    else:
        target.errors.append(error.message)


def _clock(value: str) -> time:
    return time.fromisoformat(value)


class StaffingView(RoleBaseView):
    """Agent shifts and absences. Supervisors and admins edit them; agents do not edit their own."""

    allowed_roles = (Role.SUPERVISOR, Role.ADMIN)

    # Pages

    @expose("/")
    def index(self):
        return self._index()

    def _index(
        self,
        *,
        shift_form: ShiftForm | None = None,
        absence_form: AbsenceForm | None = None,
        status: int = 200,
    ):
        business = calendar()
        chosen = request.args.get("agent", type=int)
        if shift_form is None:
            shift_form = ShiftForm(formdata=None, agent_id=chosen)
            shift_form.starts.data = business.opens.strftime("%H:%M")
            shift_form.ends.data = business.closes.strftime("%H:%M")
        if absence_form is None:
            absence_form = AbsenceForm(formdata=None, agent_id=chosen)
        agents = _agent_options()
        shift_form.agent_id.choices = agents
        absence_form.agent_id.choices = agents
        _hours(shift_form, business)
        rows = staffing.roster()
        weekdays = sorted(set(business.open_weekdays).union(*(row.days for row in rows)))
        return (
            self.render(
                "admin/staffing/index.html",
                rows=rows,
                weekdays=weekdays,
                weekday_names=WEEKDAY_NAMES,
                open_weekdays=business.open_weekdays,
                window=staffing.window_for_reader(business),
                zone=business.tz.key,
                shift_form=shift_form,
                absence_form=absence_form,
                problem=lambda shift: staffing.shift_problem(shift, business),
                local=local,
            ),
            status,
        )

    # Shifts

    @expose("/shifts/add", methods=("POST",))
    def add_shift(self):
        business = calendar()
        form = ShiftForm()
        form.agent_id.choices = _agent_options()
        _hours(form, business)
        if not form.validate_on_submit():
            return self._index(shift_form=form)
        agent = db.session.get(StaffUser, form.agent_id.data)
        try:
            shift = staffing.add_shift(
                agent,
                form.weekday.data,
                _clock(form.starts.data),
                _clock(form.ends.data),
                actor=staff_actor(),
            )
            summary = _shift_text(shift, agent)
            db.session.commit()
        except staffing.StaffingError as exc:
            db.session.rollback()
            _refuse(form, exc)
            return self._index(shift_form=form)
        flash(_("Shift added: %(shift)s.", shift=summary), "success")
        return redirect(url_for(".index"))

    @expose("/shifts/<int:shift_id>/edit", methods=("GET", "POST"))
    def edit_shift(self, shift_id: int):
        shift = self._shift(shift_id)
        business = calendar()
        form = ShiftEditForm(
            obj=None,
            weekday=shift.weekday,
            starts=shift.starts.strftime("%H:%M"),
            ends=shift.ends.strftime("%H:%M"),
        )
        _hours(form, business)
        if form.validate_on_submit():
            try:
                staffing.update_shift(
                    shift,
                    form.weekday.data,
                    _clock(form.starts.data),
                    _clock(form.ends.data),
                    actor=staff_actor(),
                )
                summary = _shift_text(shift, shift.agent)
                db.session.commit()
            except staffing.StaffingError as exc:
                db.session.rollback()
                _refuse(form, exc)
                shift = self._shift(shift_id)
            else:
                flash(_("Shift changed: %(shift)s.", shift=summary), "success")
                return redirect(url_for(".index"))
        return self.render(
            "admin/staffing/edit_shift.html",
            shift=shift,
            summary=_shift_text(shift, shift.agent),
            form=form,
            window=staffing.window_for_reader(business),
            problem=staffing.shift_problem(shift, business),
        )

    @expose("/shifts/<int:shift_id>/delete", methods=("GET", "POST"))
    def delete_shift(self, shift_id: int):
        shift = self._shift(shift_id)
        summary = _shift_text(shift, shift.agent)
        form = ConfirmForm()
        if form.validate_on_submit():
            staffing.delete_shift(shift, actor=staff_actor())
            db.session.commit()
            flash(_("Shift deleted: %(shift)s.", shift=summary), "success")
            return redirect(url_for(".index"))
        return self.render(
            "admin/staffing/confirm_delete.html",
            form=form,
            what="shift",
            summary=summary,
            action=url_for(".delete_shift", shift_id=shift.id),
        )

    # Absences

    @expose("/absences/add", methods=("POST",))
    def add_absence(self):
        business = calendar()
        form = AbsenceForm()
        form.agent_id.choices = _agent_options()
        if not form.validate_on_submit():
            return self._index(absence_form=form)
        agent = db.session.get(StaffUser, form.agent_id.data)
        try:
            starts_at = staffing.local_instant(
                form.starts_at.data.date(), form.starts_at.data.time(), business=business, field="starts_at"
            )
            ends_at = staffing.local_instant(
                form.ends_at.data.date(), form.ends_at.data.time(), business=business, field="ends_at"
            )
            absence = staffing.add_absence(agent, starts_at, ends_at, form.reason.data, actor=staff_actor())
            summary = _absence_text(absence, agent)
            db.session.commit()
        except staffing.StaffingError as exc:
            db.session.rollback()
            _refuse(form, exc)
            return self._index(absence_form=form)
        flash(_("Absence added: %(absence)s.", absence=summary), "success")
        return redirect(url_for(".index"))

    @expose("/absences/<int:absence_id>/delete", methods=("GET", "POST"))
    def delete_absence(self, absence_id: int):
        absence = db.session.get(AgentAbsence, absence_id)
        if absence is None:
            abort(404)
        summary = _absence_text(absence, absence.agent)
        form = ConfirmForm()
        if form.validate_on_submit():
            staffing.delete_absence(absence, actor=staff_actor())
            db.session.commit()
            flash(_("Absence deleted: %(absence)s.", absence=summary), "success")
            return redirect(url_for(".index"))
        return self.render(
            "admin/staffing/confirm_delete.html",
            form=form,
            what="absence",
            summary=summary,
            action=url_for(".delete_absence", absence_id=absence.id),
        )

    def _shift(self, shift_id: int) -> AgentShift:
        shift = db.session.get(AgentShift, shift_id)
        if shift is None:
            abort(404)
        return shift


def _shift_text(shift: AgentShift, agent: StaffUser) -> str:
    return f"{agent.name}, {WEEKDAY_NAMES[shift.weekday]} {shift.starts:%H:%M}-{shift.ends:%H:%M}"


def _absence_text(absence: AgentAbsence, agent: StaffUser) -> str:
    return _(
        "%(agent)s, %(starts)s to %(ends)s (%(reason)s)",
        agent=agent.name,
        starts=local(absence.starts_at),
        ends=local(absence.ends_at),
        reason=absence.reason,
    )
