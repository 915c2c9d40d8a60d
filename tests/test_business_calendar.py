"""BusinessCalendar: the call window, public holidays and the working-day SLA clock.

Every expectation is an exact instant; `assert_instant` compares in UTC because aware datetimes
sharing a ZoneInfo compare by wall clock, which would hide DST mistakes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays
import pytest

from backoffice.calls.calendar import BusinessCalendar, parse_call_window
from backoffice.config import DEFAULTS, load_config

MADRID = ZoneInfo("Europe/Madrid")
EVERY_DAY = (0, 1, 2, 3, 4, 5, 6)


def at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, fold: int = 0
) -> datetime:
    """A Madrid wall-clock time."""
    return datetime(year, month, day, hour, minute, second, tzinfo=MADRID, fold=fold)


def assert_instant(actual: datetime, expected: datetime) -> None:
    """Same instant, returned in the business time zone."""
    assert actual.tzinfo is not None
    assert getattr(actual.tzinfo, "key", None) == "Europe/Madrid"
    assert actual.astimezone(UTC) == expected.astimezone(UTC), (
        f"{actual.isoformat()} != {expected.isoformat()}"
    )


@pytest.fixture
def calendar() -> BusinessCalendar:
    return BusinessCalendar()


@pytest.fixture
def madrid_region() -> BusinessCalendar:
    return BusinessCalendar(holidays_subdiv="MD")


@pytest.fixture
def every_day() -> BusinessCalendar:
    """Open all week, so that the DST Sundays count towards the SLA."""
    return BusinessCalendar(open_weekdays=EVERY_DAY)


# Construction and defaults


def test_defaults_match_the_design():
    calendar = BusinessCalendar()

    assert calendar.tz == MADRID
    assert calendar.open_weekdays == (0, 1, 2, 3, 4)
    assert (calendar.opens, calendar.closes) == (time(8), time(22))
    assert (calendar.holidays_country, calendar.holidays_subdiv) == ("ES", None)
    assert calendar.sla_hours == 48


@pytest.mark.parametrize(
    "kwargs",
    [
        {"open_weekdays": ()},
        {"open_weekdays": (0, 7)},
        {"open_weekdays": (-1,)},
        {"opens": time(22), "closes": time(8)},
        {"opens": time(8), "closes": time(8)},
        {"opens": time(8, tzinfo=UTC)},
        {"tz": "Mars/Olympus"},
        {"holidays_country": "XX"},
        {"holidays_subdiv": "XX"},
        {"sla_hours": 0},
        {"sla_hours": -48},
        {"sla_hours": float("inf")},
    ],
)
def test_constructor_refuses_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        BusinessCalendar(**kwargs)


# from_config


def test_from_config_defaults_give_the_default_calendar():
    calendar = BusinessCalendar.from_config(DEFAULTS)

    assert calendar.tz == MADRID
    assert calendar.open_weekdays == (0, 1, 2, 3, 4)
    assert (calendar.opens, calendar.closes) == (time(8), time(22))
    assert (calendar.holidays_country, calendar.holidays_subdiv) == ("ES", None)
    assert calendar.sla_hours == 48


def test_from_config_missing_keys_fall_back_to_defaults():
    calendar = BusinessCalendar.from_config({})

    assert calendar.open_weekdays == (0, 1, 2, 3, 4)
    assert calendar.sla_hours == 48


def test_from_config_reads_every_setting():
    calendar = BusinessCalendar.from_config(
        {
            "BUSINESS_TZ": "Atlantic/Canary",
            "CALL_WINDOW": "Mon-Sat 09:00-21:00",
            "HOLIDAYS_COUNTRY": "ES",
            "HOLIDAYS_SUBDIV": "CN",
            "SLA_HOURS": 24,
        }
    )

    assert calendar.tz == ZoneInfo("Atlantic/Canary")
    assert calendar.open_weekdays == (0, 1, 2, 3, 4, 5)
    assert (calendar.opens, calendar.closes) == (time(9), time(21))
    assert calendar.holidays_subdiv == "CN"
    assert calendar.sla_hours == 24


def test_from_config_takes_what_load_config_produces(tmp_path):
    config = load_config(
        {"CALL_WINDOW": "Mon,Wed,Fri 08:00-14:00", "HOLIDAYS_SUBDIV": "MD", "SLA_HOURS": "24"},
        str(tmp_path),
        {"SECRET_KEY": "test"},
    )

    calendar = BusinessCalendar.from_config(config)

    assert calendar.open_weekdays == (0, 2, 4)
    assert (calendar.opens, calendar.closes) == (time(8), time(14))
    assert calendar.holidays_subdiv == "MD"
    assert calendar.sla_hours == 24


@pytest.mark.parametrize("empty", [None, ""])
def test_from_config_empty_subdiv_means_national_holidays_only(empty):
    assert BusinessCalendar.from_config({"HOLIDAYS_SUBDIV": empty}).holidays_subdiv is None


@pytest.mark.parametrize(
    ("value", "weekdays", "opens", "closes"),
    [
        ("Mon-Fri 08:00-22:00", (0, 1, 2, 3, 4), time(8), time(22)),
        ("Mon-Sat 09:00-21:00", (0, 1, 2, 3, 4, 5), time(9), time(21)),
        ("Mon,Wed,Fri 08:00-14:00", (0, 2, 4), time(8), time(14)),
        ("Mon, Wed, Fri 08:00 - 14:00", (0, 2, 4), time(8), time(14)),
        ("mon-fri 8:00-22:30", (0, 1, 2, 3, 4), time(8), time(22, 30)),
        ("Mon-Tue,Thu-Fri 10:00-18:00", (0, 1, 3, 4), time(10), time(18)),
        ("Sun 00:00-23:59", (6,), time(0), time(23, 59)),
        ("Mon-Sun 08:00-22:00", EVERY_DAY, time(8), time(22)),
    ],
)
def test_call_window_parsing(value, weekdays, opens, closes):
    assert parse_call_window(value) == (weekdays, opens, closes)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Mon-Fri",
        "08:00-22:00",
        "Mon-Fri 08:00",
        "Mon-Fri 0800-2200",
        "Mon-Fri 08:00-22:00 extra",
        "Foo-Fri 08:00-22:00",
        "Monday-Friday 08:00-22:00",
        "Fri-Mon 08:00-22:00",
        "Mon-Wed-Fri 08:00-22:00",
        "Mon-Fri 22:00-08:00",
        "Mon-Fri 08:00-08:00",
        "Mon-Fri 24:00-25:00",
        "Mon-Fri 08:60-22:00",
    ],
)
def test_malformed_call_window_names_the_setting(value):
    with pytest.raises(ValueError, match="CALL_WINDOW"):
        BusinessCalendar.from_config({"CALL_WINDOW": value})


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("BUSINESS_TZ", "Mars/Olympus"),
        ("BUSINESS_TZ", ""),
        ("HOLIDAYS_COUNTRY", "XX"),
        ("HOLIDAYS_SUBDIV", "XX"),
        ("SLA_HOURS", "forty-eight"),
        ("SLA_HOURS", 0),
        ("SLA_HOURS", -1),
        ("SLA_HOURS", None),
    ],
)
def test_invalid_setting_is_named_in_the_error(setting, value):
    with pytest.raises(ValueError, match=setting):
        BusinessCalendar.from_config({setting: value})


# Holidays


@pytest.mark.parametrize(
    "day",
    [date(2026, 12, 8), date(2026, 12, 25), date(2027, 1, 1), date(2027, 1, 6), date(2027, 3, 26)],
    ids=["inmaculada", "christmas", "new-year", "epiphany", "good-friday"],
)
def test_national_holidays_on_weekdays_are_not_working_days(calendar, day):
    assert day.weekday() < 5
    assert not calendar.is_working_day(day)


@pytest.mark.parametrize("day", [date(2026, 11, 14), date(2026, 11, 15)], ids=["saturday", "sunday"])
def test_weekends_are_not_working_days(calendar, day):
    assert not calendar.is_working_day(day)


def test_ordinary_weekday_is_a_working_day(calendar):
    assert calendar.is_working_day(date(2026, 11, 16))


@pytest.mark.parametrize(
    "day",
    [date(2028, 5, 2), date(2027, 5, 3), date(2027, 3, 19), date(2026, 12, 7)],
    ids=["madrid-day-tuesday", "madrid-day-moved-to-monday", "san-jose", "constitution-moved-to-monday"],
)
def test_regional_holidays_close_only_the_region(calendar, madrid_region, day):
    assert calendar.is_working_day(day)
    assert not madrid_region.is_working_day(day)


def test_is_working_day_of_a_datetime_uses_the_business_date(calendar):
    # 23:30 UTC on Friday is already Saturday in Madrid.
    assert not calendar.is_working_day(datetime(2026, 11, 13, 23, 30, tzinfo=UTC))
    assert calendar.is_working_day(datetime(2026, 11, 15, 23, 30, tzinfo=UTC))


def test_holidays_between_includes_both_ends_and_spans_years(calendar):
    found = calendar.holidays_between(date(2026, 12, 8), date(2027, 1, 6))

    assert list(found) == [date(2026, 12, 8), date(2026, 12, 25), date(2027, 1, 1), date(2027, 1, 6)]
    assert all(isinstance(name, str) and name for name in found.values())


def test_holidays_between_adds_regional_holidays(calendar, madrid_region):
    may = (date(2028, 5, 1), date(2028, 5, 31))

    assert list(calendar.holidays_between(*may)) == [date(2028, 5, 1)]
    assert list(madrid_region.holidays_between(*may)) == [date(2028, 5, 1), date(2028, 5, 2)]


def test_holidays_between_reversed_range_is_empty(calendar):
    assert calendar.holidays_between(date(2026, 12, 31), date(2026, 12, 1)) == {}


def test_holidays_are_looked_up_once_per_year(calendar, monkeypatch):
    lookups = []
    real = holidays.country_holidays

    def counting(*args, **kwargs):
        lookups.append(kwargs.get("years"))
        return real(*args, **kwargs)

    monkeypatch.setattr(holidays, "country_holidays", counting)

    calendar.is_working_day(date(2026, 12, 8))
    calendar.is_working_day(date(2026, 12, 25))
    calendar.is_open(at(2026, 6, 1, 10))
    calendar.is_working_day(date(2027, 1, 1))

    assert lookups == [2026, 2027]


# is_open


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(2026, 11, 16, 7, 59, 59), False),
        (at(2026, 11, 16, 8), True),
        (at(2026, 11, 16, 21, 59, 59), True),
        (at(2026, 11, 16, 21, 59, 59) + timedelta(microseconds=999_999), True),
        (at(2026, 11, 16, 22), False),
        (at(2026, 11, 16, 0), False),
    ],
    ids=["07:59:59", "08:00", "21:59:59", "21:59:59.999999", "22:00", "midnight"],
)
def test_window_is_half_open(calendar, moment, expected):
    assert calendar.is_open(moment) is expected


@pytest.mark.parametrize(
    "moment", [at(2026, 11, 14, 12), at(2026, 11, 15, 12), at(2026, 12, 8, 12), at(2026, 12, 25, 12)]
)
def test_closed_all_day_on_weekends_and_holidays(calendar, moment):
    assert not calendar.is_open(moment)


def test_regional_holiday_closes_the_window_only_in_the_region(calendar, madrid_region):
    assert calendar.is_open(at(2028, 5, 2, 12))
    assert not madrid_region.is_open(at(2028, 5, 2, 12))


def test_is_open_reads_the_business_time_zone(calendar):
    # 07:30 UTC is 08:30 in Madrid in winter; 21:30 UTC is 22:30 in Madrid.
    assert calendar.is_open(datetime(2026, 11, 16, 7, 30, tzinfo=UTC))
    assert not calendar.is_open(datetime(2026, 11, 16, 21, 30, tzinfo=UTC))


def test_custom_window_from_config():
    calendar = BusinessCalendar.from_config({"CALL_WINDOW": "Mon,Wed,Fri 08:00-14:00"})

    assert calendar.is_open(at(2026, 11, 18, 13, 59))
    assert not calendar.is_open(at(2026, 11, 18, 14))
    assert not calendar.is_open(at(2026, 11, 17, 10))


# next_open


def test_next_open_of_an_open_moment_is_itself(calendar):
    assert_instant(calendar.next_open(at(2026, 11, 16, 12, 34, 56)), at(2026, 11, 16, 12, 34, 56))


def test_next_open_before_opening_is_the_same_morning(calendar):
    assert_instant(calendar.next_open(at(2026, 11, 16, 7, 59, 59)), at(2026, 11, 16, 8))


def test_next_open_at_closing_is_the_next_morning(calendar):
    assert_instant(calendar.next_open(at(2026, 11, 16, 22)), at(2026, 11, 17, 8))


@pytest.mark.parametrize(
    "moment", [at(2026, 11, 20, 22), at(2026, 11, 21, 12), at(2026, 11, 22, 23, 59, 59), at(2026, 11, 23, 0)]
)
def test_next_open_from_friday_night_or_the_weekend_is_monday_morning(calendar, moment):
    assert_instant(calendar.next_open(moment), at(2026, 11, 23, 8))


def test_next_open_on_the_eve_of_a_holiday_skips_it(calendar):
    # Monday 7 December 2026 evening; Tuesday 8 is the Immaculate Conception.
    assert_instant(calendar.next_open(at(2026, 12, 7, 22)), at(2026, 12, 9, 8))


def test_next_open_on_christmas_eve_skips_christmas_and_the_weekend(calendar):
    assert_instant(calendar.next_open(at(2026, 12, 24, 22)), at(2026, 12, 28, 8))


def test_next_open_skips_regional_holidays_in_the_region(calendar, madrid_region):
    # Monday 7 December 2026 is a Madrid holiday (Constitution Day moved from Sunday).
    assert_instant(calendar.next_open(at(2026, 12, 4, 22)), at(2026, 12, 7, 8))
    assert_instant(madrid_region.next_open(at(2026, 12, 4, 22)), at(2026, 12, 9, 8))


# last_open_before


def test_last_open_before_an_open_moment_is_itself(calendar):
    assert_instant(calendar.last_open_before(at(2026, 11, 17, 15, 30)), at(2026, 11, 17, 15, 30))


def test_last_open_before_at_opening_is_itself(calendar):
    assert_instant(calendar.last_open_before(at(2026, 11, 17, 8)), at(2026, 11, 17, 8))


@pytest.mark.parametrize(
    "moment", [at(2026, 11, 17, 22), at(2026, 11, 17, 23, 30), at(2026, 11, 18, 7, 59, 59)]
)
def test_last_open_before_a_late_deadline_is_that_evening_closing(calendar, moment):
    assert_instant(calendar.last_open_before(moment), at(2026, 11, 17, 22))


def test_last_open_before_monday_early_morning_is_friday_closing(calendar):
    assert_instant(calendar.last_open_before(at(2026, 11, 23, 3)), at(2026, 11, 20, 22))


def test_last_open_before_skips_holidays_backwards(calendar):
    # Monday 28 December 2026 early: Christmas Friday and the weekend are closed.
    assert_instant(calendar.last_open_before(at(2026, 12, 28, 7)), at(2026, 12, 24, 22))


# The SLA clock


def test_friday_evening_submission_is_due_tuesday_evening(calendar):
    assert_instant(calendar.sla_deadline(at(2026, 11, 13, 18)), at(2026, 11, 17, 18))


@pytest.mark.parametrize(
    ("start", "deadline"),
    [
        (at(2026, 11, 16, 0), at(2026, 11, 18, 0)),
        (at(2026, 11, 16, 8), at(2026, 11, 18, 8)),
        (at(2026, 11, 16, 21, 59, 59), at(2026, 11, 18, 21, 59, 59)),
        (at(2026, 11, 16, 22), at(2026, 11, 18, 22)),
        (at(2026, 11, 16, 23, 59, 59), at(2026, 11, 18, 23, 59, 59)),
    ],
    ids=["midnight", "08:00", "21:59:59", "22:00", "23:59:59"],
)
def test_monday_start_at_any_boundary_is_due_two_days_later(calendar, start, deadline):
    assert_instant(calendar.sla_deadline(start), deadline)


@pytest.mark.parametrize(
    ("start", "deadline"),
    [
        (at(2026, 11, 20, 0), at(2026, 11, 24, 0)),
        (at(2026, 11, 20, 8), at(2026, 11, 24, 8)),
        (at(2026, 11, 20, 21, 59, 59), at(2026, 11, 24, 21, 59, 59)),
        (at(2026, 11, 20, 22), at(2026, 11, 24, 22)),
        (at(2026, 11, 20, 23, 59, 59), at(2026, 11, 24, 23, 59, 59)),
    ],
    ids=["midnight", "08:00", "21:59:59", "22:00", "23:59:59"],
)
def test_friday_start_at_any_boundary_skips_the_weekend(calendar, start, deadline):
    assert_instant(calendar.sla_deadline(start), deadline)


def test_working_day_counts_all_its_hours_not_only_the_window(calendar):
    assert_instant(calendar.add_working_hours(at(2026, 11, 16, 21), 2), at(2026, 11, 16, 23))


def test_hours_ending_exactly_at_a_working_day_end_give_the_next_midnight(calendar):
    # Friday's 24 hours run out at Friday 24:00, which is Saturday 00:00.
    assert_instant(calendar.add_working_hours(at(2026, 11, 20, 0), 24), at(2026, 11, 21, 0))


@pytest.mark.parametrize(
    "start",
    [at(2026, 11, 14, 0), at(2026, 11, 14, 10), at(2026, 11, 15, 23, 59, 59)],
    ids=["saturday-midnight", "saturday-morning", "sunday-night"],
)
def test_weekend_start_counts_from_monday_midnight(calendar, start):
    assert_instant(calendar.sla_deadline(start), at(2026, 11, 18, 0))


@pytest.mark.parametrize(
    ("start", "deadline"),
    [
        # Tuesday: counting starts Wednesday 9 at 00:00.
        (at(2026, 12, 8, 10), at(2026, 12, 11, 0)),
        # Christmas Friday: counting starts Monday 28 at 00:00.
        (at(2026, 12, 25, 15), at(2026, 12, 30, 0)),
        # New Year Friday: Monday 4 and Tuesday 5 run out at the start of Epiphany.
        (at(2027, 1, 1, 9), at(2027, 1, 6, 0)),
        # Epiphany Wednesday: counting starts Thursday 7; Thursday and Friday end it.
        (at(2027, 1, 6, 9), at(2027, 1, 9, 0)),
    ],
    ids=["inmaculada", "christmas", "new-year", "epiphany"],
)
def test_holiday_start_counts_from_the_next_working_day_midnight(calendar, start, deadline):
    assert_instant(calendar.sla_deadline(start), deadline)


def test_deadline_skips_a_holiday_and_the_weekend(calendar):
    # Thursday 24 December 10:00: 14 h Thursday, Christmas and the weekend skipped,
    # 24 h Monday 28, 10 h Tuesday 29.
    assert_instant(calendar.sla_deadline(at(2026, 12, 24, 10)), at(2026, 12, 29, 10))


def test_deadline_skips_a_regional_holiday_only_in_the_region(calendar, madrid_region):
    # Friday 28 April 2028 noon; Monday 1 May is national, Tuesday 2 May is Madrid's.
    start = at(2028, 4, 28, 12)

    assert_instant(calendar.sla_deadline(start), at(2028, 5, 3, 12))
    assert_instant(madrid_region.sla_deadline(start), at(2028, 5, 4, 12))


def test_deadline_over_good_friday_and_the_spring_forward_weekend(calendar):
    # Thursday 25 March 2027 10:00 CET; Good Friday and the 23-hour Sunday do not count.
    deadline = calendar.sla_deadline(at(2027, 3, 25, 10))

    assert_instant(deadline, at(2027, 3, 30, 10))
    assert deadline.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize("hours", [24, "24"])
def test_sla_hours_is_configurable(hours):
    calendar = BusinessCalendar.from_config({"SLA_HOURS": hours})

    assert_instant(calendar.sla_deadline(at(2026, 11, 13, 18)), at(2026, 11, 16, 18))


def test_sla_deadline_equals_add_working_hours_of_sla_hours():
    calendar = BusinessCalendar(sla_hours=30)
    start = at(2026, 11, 13, 18)

    assert_instant(calendar.sla_deadline(start), calendar.add_working_hours(start, 30))


def test_fractional_hours_are_kept_to_the_second(calendar):
    assert_instant(calendar.add_working_hours(at(2026, 11, 16, 10), 1.5), at(2026, 11, 16, 11, 30))


def test_zero_hours_from_a_working_day_is_the_start(calendar):
    assert_instant(calendar.add_working_hours(at(2026, 11, 16, 10), 0), at(2026, 11, 16, 10))


def test_zero_hours_from_a_weekend_is_when_the_clock_starts(calendar):
    assert_instant(calendar.add_working_hours(at(2026, 11, 14, 10), 0), at(2026, 11, 16, 0))


@pytest.mark.parametrize("hours", [-1, float("nan"), float("inf")])
def test_add_working_hours_refuses_negative_or_non_finite_hours(calendar, hours):
    with pytest.raises(ValueError):
        calendar.add_working_hours(at(2026, 11, 16, 10), hours)


# DST: count real elapsed time within each local day


def test_spring_forward_sunday_counts_23_hours(every_day):
    # Saturday 27 March 2027 noon: 12 h Saturday + 23 h Sunday + 13 h Monday.
    deadline = every_day.sla_deadline(at(2027, 3, 27, 12))

    assert_instant(deadline, at(2027, 3, 29, 13))
    assert deadline - datetime(2027, 3, 27, 11, tzinfo=UTC) == timedelta(hours=48)


def test_fall_back_sunday_counts_25_hours(every_day):
    # Saturday 24 October 2026 noon: 12 h Saturday + 25 h Sunday + 11 h Monday.
    deadline = every_day.sla_deadline(at(2026, 10, 24, 12))

    assert_instant(deadline, at(2026, 10, 26, 11))
    assert deadline - datetime(2026, 10, 24, 10, tzinfo=UTC) == timedelta(hours=48)


def test_spring_forward_day_from_midnight(every_day):
    # Sunday 28 March 2027 has 23 hours, so 24 hours end at Monday 01:00.
    assert_instant(every_day.add_working_hours(at(2027, 3, 28, 0), 24), at(2027, 3, 29, 1))


def test_fall_back_day_from_midnight(every_day):
    # Sunday 25 October 2026 has 25 hours, so 24 hours end at Sunday 23:00.
    assert_instant(every_day.add_working_hours(at(2026, 10, 25, 0), 24), at(2026, 10, 25, 23))


def test_one_hour_inside_the_repeated_hour_is_real_time(every_day):
    # 02:30 CEST plus one real hour is 02:30 CET, the second time the clock shows 02:30.
    result = every_day.add_working_hours(at(2026, 10, 25, 2, 30, fold=0), 1)

    assert result.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert result.utcoffset() == timedelta(hours=1)


def test_one_hour_across_the_spring_gap_is_real_time(every_day):
    # 01:30 CET plus one real hour is 03:30 CEST (02:xx does not exist that night).
    assert_instant(every_day.add_working_hours(at(2027, 3, 28, 1, 30), 1), at(2027, 3, 28, 3, 30))


def test_every_day_calendar_matches_plain_elapsed_time(every_day):
    start = at(2026, 10, 23, 18)

    assert_instant(every_day.add_working_hours(start, 100), start.astimezone(UTC) + timedelta(hours=100))


@pytest.mark.parametrize(
    ("a", "b", "hours"),
    [
        (at(2027, 3, 27, 0), at(2027, 3, 29, 0), 47.0),
        (at(2026, 10, 24, 0), at(2026, 10, 26, 0), 49.0),
        (at(2027, 3, 28, 0), at(2027, 3, 28, 12), 11.0),
        (at(2026, 10, 25, 0), at(2026, 10, 25, 12), 13.0),
        (at(2026, 10, 25, 2, 30, fold=0), at(2026, 10, 25, 2, 30, fold=1), 1.0),
    ],
    ids=["spring-weekend", "fall-weekend", "spring-morning", "fall-morning", "repeated-hour"],
)
def test_working_hours_between_across_dst(every_day, a, b, hours):
    assert every_day.working_hours_between(a, b) == hours


def test_working_hours_between_on_the_default_calendar_ignores_the_dst_sunday(calendar):
    # Thursday 25 March 2027 to Tuesday 30: Thursday and Monday only (Good Friday, weekend off).
    assert calendar.working_hours_between(at(2027, 3, 25, 0), at(2027, 3, 30, 0)) == 48.0


# working_hours_between


def test_friday_evening_to_tuesday_evening_is_48_hours(calendar):
    assert calendar.working_hours_between(at(2026, 11, 13, 18), at(2026, 11, 17, 18)) == 48.0


def test_working_hours_between_the_same_instant_is_zero(calendar):
    assert calendar.working_hours_between(at(2026, 11, 16, 10), at(2026, 11, 16, 10)) == 0.0


def test_working_hours_within_a_weekend_is_zero(calendar):
    assert calendar.working_hours_between(at(2026, 11, 14, 1), at(2026, 11, 15, 23)) == 0.0


def test_working_hours_from_saturday_to_monday_noon(calendar):
    assert calendar.working_hours_between(at(2026, 11, 14, 12), at(2026, 11, 16, 12)) == 12.0


def test_working_hours_between_skips_holidays(calendar):
    assert calendar.working_hours_between(at(2026, 12, 24, 10), at(2026, 12, 29, 10)) == 48.0


def test_working_hours_between_reversed_is_negative(calendar):
    assert calendar.working_hours_between(at(2026, 11, 17, 18), at(2026, 11, 13, 18)) == -48.0


def test_working_hours_between_has_fractions(calendar):
    assert calendar.working_hours_between(at(2026, 11, 16, 10), at(2026, 11, 16, 10, 45)) == 0.75


@pytest.mark.parametrize(
    "start",
    [
        at(2026, 11, 13, 18),
        at(2026, 11, 14, 10),
        at(2026, 12, 24, 10),
        at(2027, 3, 25, 10),
        at(2026, 11, 16, 23, 59, 59),
    ],
)
@pytest.mark.parametrize("hours", [0.5, 24, 48, 100])
def test_working_hours_between_undoes_add_working_hours(calendar, start, hours):
    end = calendar.add_working_hours(start, hours)

    assert calendar.working_hours_between(start, end) == pytest.approx(hours, abs=1e-9)


# Time zones of inputs and results


OTHER_ZONES = [UTC, timezone(timedelta(hours=-5)), ZoneInfo("Asia/Tokyo")]


@pytest.mark.parametrize("zone", OTHER_ZONES, ids=["utc", "minus-5", "tokyo"])
@pytest.mark.parametrize("method", ["next_open", "last_open_before", "sla_deadline"])
@pytest.mark.parametrize(
    "moment",
    [
        at(2026, 11, 13, 18),
        at(2026, 11, 20, 22),
        at(2026, 11, 23, 3),
        at(2027, 3, 28, 3),
        at(2026, 10, 25, 2, 30, fold=1),
    ],
)
def test_other_zone_inputs_give_the_same_instants_in_business_time(calendar, zone, method, moment):
    expected = getattr(calendar, method)(moment)

    assert_instant(getattr(calendar, method)(moment.astimezone(zone)), expected)


@pytest.mark.parametrize("zone", OTHER_ZONES, ids=["utc", "minus-5", "tokyo"])
def test_other_zone_inputs_give_the_same_answers(calendar, zone):
    a, b = at(2026, 11, 13, 18), at(2026, 11, 17, 18)

    assert calendar.is_open(at(2026, 11, 16, 8).astimezone(zone))
    assert not calendar.is_open(at(2026, 11, 16, 22).astimezone(zone))
    assert calendar.working_hours_between(a.astimezone(zone), b.astimezone(zone)) == 48.0
    assert_instant(calendar.add_working_hours(a.astimezone(zone), 6), at(2026, 11, 14, 0))


def test_utc_submission_on_friday_night_counts_as_saturday_in_madrid(calendar):
    # 23:30 UTC Friday is 00:30 Saturday in Madrid: the clock starts on Monday.
    assert_instant(calendar.sla_deadline(datetime(2026, 11, 13, 23, 30, tzinfo=UTC)), at(2026, 11, 18, 0))


def test_results_are_in_another_business_time_zone_when_configured():
    canary = BusinessCalendar(tz="Atlantic/Canary")

    result = canary.next_open(datetime(2026, 11, 16, 7, 30, tzinfo=UTC))

    assert result.tzinfo == ZoneInfo("Atlantic/Canary")
    assert result.astimezone(UTC) == datetime(2026, 11, 16, 8, tzinfo=UTC)


# Naive datetimes are refused everywhere


NAIVE = datetime(2026, 11, 16, 10)
AWARE = at(2026, 11, 16, 10)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.is_open(NAIVE),
        lambda c: c.next_open(NAIVE),
        lambda c: c.last_open_before(NAIVE),
        lambda c: c.add_working_hours(NAIVE, 1),
        lambda c: c.sla_deadline(NAIVE),
        lambda c: c.working_hours_between(NAIVE, AWARE),
        lambda c: c.working_hours_between(AWARE, NAIVE),
        lambda c: c.is_working_day(NAIVE),
        lambda c: c.holidays_between(NAIVE, date(2026, 12, 31)),
    ],
    ids=[
        "is_open",
        "next_open",
        "last_open_before",
        "add_working_hours",
        "sla_deadline",
        "working_hours_between-a",
        "working_hours_between-b",
        "is_working_day",
        "holidays_between",
    ],
)
def test_naive_datetimes_raise_value_error(calendar, call):
    with pytest.raises(ValueError, match="naive"):
        call(calendar)
