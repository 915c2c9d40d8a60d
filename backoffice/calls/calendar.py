"""Business calendar: the call window, public holidays and the 48-hour SLA clock.

Two notions of "open" live here and must not be confused:

* the *call window* (Mon-Fri 08:00-22:00 by default, closed on public holidays) says when a call
  may be made: `is_open`, `next_open`, `last_open_before`;
* the *SLA clock* runs on whole *working days* (an open weekday that is not a public holiday
  counts all of its hours, not only the window's): `add_working_hours`, `sla_deadline`,
  `working_hours_between`.

Every instant is compared and added in UTC: aware datetimes that share a `ZoneInfo` compare and
add wall-clock time, which would make a DST-change day last 24 hours instead of the 23 or 25
that really elapse.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

DEFAULT_TZ = "Europe/Madrid"
DEFAULT_CALL_WINDOW = "Mon-Fri 08:00-22:00"
DEFAULT_HOLIDAYS_COUNTRY = "ES"
DEFAULT_SLA_HOURS = 48

WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ONE_DAY = timedelta(days=1)
_ONE_HOUR = timedelta(hours=1)
# Stops a search that can never succeed (e.g. every open weekday a holiday) instead of looping.
_MAX_CLOSED_DAYS = 366
_WINDOW = re.compile(
    r"^\s*(?P<days>[a-z]{3}(?:\s*[-,]\s*[a-z]{3})*)\s+"
    r"(?P<opens>\d{1,2}:\d{2})\s*-\s*(?P<closes>\d{1,2}:\d{2})\s*$",
    re.IGNORECASE,
)


def parse_call_window(value: str) -> tuple[tuple[int, ...], time, time]:
    """Read a `CALL_WINDOW` such as "Mon-Fri 08:00-22:00" or "Mon,Wed,Fri 08:00-14:00".

    Returns (weekdays with Monday = 0, opens, closes). A range never wraps round the week:
    "Fri-Mon" is refused, since a reversed range is more likely a typo than a wish.
    """
    match = _WINDOW.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("expected weekdays and hours such as 'Mon-Fri 08:00-22:00'")
    weekdays: set[int] = set()
    for item in match["days"].split(","):
        ends = [_weekday(name) for name in item.split("-")]
        if len(ends) > 2 or ends[-1] < ends[0]:
            raise ValueError(f"{item.strip()!r} is not a day or a forward range such as 'Mon-Fri'")
        weekdays.update(range(ends[0], ends[-1] + 1))
    opens, closes = _clock(match["opens"]), _clock(match["closes"])
    _check_window(weekdays, opens, closes)
    return tuple(sorted(weekdays)), opens, closes


class BusinessCalendar:
    """When calls may be made and when the 48-hour promise to an applicant runs out."""

    def __init__(
        self,
        tz: str = DEFAULT_TZ,
        open_weekdays: Iterable[int] = (0, 1, 2, 3, 4),
        opens: time = time(8),
        closes: time = time(22),
        holidays_country: str = DEFAULT_HOLIDAYS_COUNTRY,
        holidays_subdiv: str | None = None,
        sla_hours: float = DEFAULT_SLA_HOURS,
    ) -> None:
        weekdays = frozenset(open_weekdays)
        _check_window(weekdays, opens, closes)
        _check_holidays(holidays_country, holidays_subdiv)
        self.tz = _zone(tz)
        self.open_weekdays = tuple(sorted(weekdays))
        self.opens = opens
        self.closes = closes
        self.holidays_country = holidays_country
        self.holidays_subdiv = holidays_subdiv or None
        self.sla_hours = _positive_hours(sla_hours)
        self._weekdays = weekdays
        # Holidays are computed per year on first use: a calendar lives as long as the app.
        self._holidays: dict[int, dict[date, str]] = {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BusinessCalendar:
        """Build from `app.config`; a bad setting raises ValueError naming it."""
        tz = config.get("BUSINESS_TZ", DEFAULT_TZ)
        window = config.get("CALL_WINDOW", DEFAULT_CALL_WINDOW)
        country = config.get("HOLIDAYS_COUNTRY", DEFAULT_HOLIDAYS_COUNTRY)
        subdiv = config.get("HOLIDAYS_SUBDIV") or None
        sla_hours = config.get("SLA_HOURS", DEFAULT_SLA_HOURS)
        with _setting("BUSINESS_TZ", tz):
            _zone(tz)
        with _setting("CALL_WINDOW", window):
            weekdays, opens, closes = parse_call_window(window)
        with _setting("HOLIDAYS_COUNTRY", country):
            _check_holidays(country, None)
        with _setting("HOLIDAYS_SUBDIV", subdiv):
            _check_holidays(country, subdiv)
        with _setting("SLA_HOURS", sla_hours):
            _positive_hours(sla_hours)
        return cls(tz, weekdays, opens, closes, country, subdiv, sla_hours)

    # Days and holidays

    def is_working_day(self, day: date) -> bool:
        """An open weekday that is not a public holiday (a datetime counts by its local date)."""
        day = self._day(day)
        return day.weekday() in self._weekdays and day not in self._holidays_in(day.year)

    def holidays_between(self, first: date, last: date) -> dict[date, str]:
        """Public holidays from `first` to `last`, both included, by date (weekends too)."""
        first, last = self._day(first), self._day(last)
        found: dict[date, str] = {}
        for year in range(first.year, last.year + 1):
            found.update((d, name) for d, name in self._holidays_in(year).items() if first <= d <= last)
        return dict(sorted(found.items()))

    # The call window

    def is_open(self, dt: datetime) -> bool:
        """Inside the window on a working day; half-open, so opening is open and closing is not."""
        local = self._local(dt)
        return self.is_working_day(local.date()) and self.opens <= local.time() < self.closes

    def next_open(self, dt: datetime) -> datetime:
        """`dt` itself when open, else the next opening instant."""
        local = self._local(dt)
        if self.is_open(local):
            return local
        moment = local.astimezone(UTC)
        for day in self._working_days(local.date(), forward=True):
            opening = self._instant(day, self.opens)
            if moment < opening:
                return opening.astimezone(self.tz)
        raise AssertionError("unreachable: _working_days never ends")  # pragma: no cover

    def last_open_before(self, dt: datetime) -> datetime:
        """`dt` itself when open, else the closing instant of the last window before it.

        The closing instant is itself closed (the window is half-open): it is the bound a call
        must come before, e.g. the last chance to meet an SLA deadline.
        """
        local = self._local(dt)
        if self.is_open(local):
            return local
        moment = local.astimezone(UTC)
        for day in self._working_days(local.date(), forward=False):
            closing = self._instant(day, self.closes)
            if closing <= moment:
                return closing.astimezone(self.tz)
        raise AssertionError("unreachable: _working_days never ends")  # pragma: no cover

    # The SLA clock

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """The instant at which `hours` of working-day time have elapsed since `start`.

        A start outside a working day begins counting at the next working day's 00:00 (that is
        also the answer for 0 hours). Hours that run out exactly at a working day's end give the
        following midnight, the earliest instant at which they have all elapsed.
        """
        local = self._local(start)
        if not math.isfinite(hours) or hours < 0:
            raise ValueError(f"hours must be a finite number >= 0, got {hours!r}")
        remaining = timedelta(hours=hours)
        moment = local.astimezone(UTC)
        for day in self._working_days(local.date(), forward=True):
            begin = max(moment, self._instant(day))
            available = self._instant(day + _ONE_DAY) - begin
            if remaining <= available:
                return (begin + remaining).astimezone(self.tz)
            remaining -= available
        raise AssertionError("unreachable: _working_days never ends")  # pragma: no cover

    def sla_deadline(self, start: datetime) -> datetime:
        """The promise made at (re)submission: `sla_hours` working-day hours after `start`."""
        return self.add_working_hours(start, self.sla_hours)

    def working_hours_between(self, a: datetime, b: datetime) -> float:
        """Working-day hours from `a` to `b`; negative when `b` is before `a`.

        Negative rather than an error so that "hours left until the deadline" goes below zero
        once a task is overdue.
        """
        start = self._local(a).astimezone(UTC)
        end = self._local(b).astimezone(UTC)
        if end < start:
            return -self.working_hours_between(b, a)
        total = timedelta()
        last_day = end.astimezone(self.tz).date()
        for day in self._working_days(start.astimezone(self.tz).date(), forward=True):
            if day > last_day:
                break
            overlap = min(end, self._instant(day + _ONE_DAY)) - max(start, self._instant(day))
            total += max(overlap, timedelta())
        return total / _ONE_HOUR

    # Helpers

    def _local(self, dt: datetime) -> datetime:
        """The same instant in the business time zone; a naive datetime is refused, not guessed."""
        if not isinstance(dt, datetime):
            raise TypeError(f"expected a datetime, got {type(dt).__name__}")
        if dt.utcoffset() is None:
            raise ValueError(f"naive datetime {dt.isoformat()}: give it a time zone")
        return dt.astimezone(self.tz)

    def _day(self, day: date) -> date:
        return self._local(day).date() if isinstance(day, datetime) else day

    def _instant(self, day: date, at: time = time(0)) -> datetime:
        """The real instant (UTC) of a local wall time; a time skipped by DST maps past the gap."""
        return datetime.combine(day, at, tzinfo=self.tz).astimezone(UTC)

    def _holidays_in(self, year: int) -> dict[date, str]:
        found = self._holidays.get(year)
        if found is None:
            rules = holidays.country_holidays(self.holidays_country, subdiv=self.holidays_subdiv, years=year)
            found = self._holidays[year] = dict(rules)
        return found

    def _working_days(self, day: date, *, forward: bool) -> Iterator[date]:
        """Working days from `day` (included), forwards or backwards."""
        step = _ONE_DAY if forward else -_ONE_DAY
        closed = 0
        while True:
            if self.is_working_day(day):
                closed = 0
                yield day
            else:
                closed += 1
                if closed > _MAX_CLOSED_DAYS:
                    raise RuntimeError(f"no working day within {_MAX_CLOSED_DAYS} days of {day}")
            day += step


def _weekday(name: str) -> int:
    try:
        return WEEKDAY_NAMES.index(name.strip().lower())
    except ValueError:
        raise ValueError(f"{name.strip()!r} is not a weekday (Mon, Tue, ... Sun)") from None


def _clock(text: str) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text!r} is not a time between 00:00 and 23:59")
    return time(hours, minutes)


def _check_window(weekdays: Iterable[int], opens: time, closes: time) -> None:
    weekdays = list(weekdays)
    if not weekdays or any(not isinstance(d, int) or not 0 <= d <= 6 for d in weekdays):
        raise ValueError(f"open weekdays must be one or more of 0 (Monday) to 6 (Sunday), got {weekdays}")
    for moment in (opens, closes):
        if not isinstance(moment, time) or moment.tzinfo is not None:
            raise ValueError(f"opening hours must be naive local times, got {moment!r}")
    if opens >= closes:
        raise ValueError(f"the window must open before it closes, got {opens:%H:%M}-{closes:%H:%M}")


def _check_holidays(country: str, subdiv: str | None) -> None:
    try:
        holidays.country_holidays(country, subdiv=subdiv)
    except (NotImplementedError, TypeError) as exc:
        raise ValueError(f"no public holidays known for {country!r}/{subdiv!r}: {exc}") from None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _positive_hours(value: object) -> float:
    try:
        hours = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        hours = math.nan
    if isinstance(value, bool) or not math.isfinite(hours) or hours <= 0:
        raise ValueError(f"must be a positive number of hours, got {value!r}")
    return hours


@contextmanager
def _setting(name: str, value: object) -> Iterator[None]:
    """Name the configuration setting in the error, since that is what an operator must fix."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"{name}={value!r} is invalid: {exc}") from None
