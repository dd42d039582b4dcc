"""GET /admin/usage's query string: accepted forms, and 400s that name the parameter."""

from __future__ import annotations

import calendar

import pytest

from hub.errors import BadRequest
from hub.ledger.query import DEFAULT_GROUPS, UsageQuery, parse_query


def test_defaults() -> None:
    assert parse_query({}) == UsageQuery(group_by=DEFAULT_GROUPS)


def test_dates_times_and_groups() -> None:
    q = parse_query({"tenant": "acme", "since": "2026-11-01",
                     "until": "2026-11-02T13:45:00+01:00", "group_by": "day, model"})
    assert q.tenant == "acme"
    assert q.since == calendar.timegm((2026, 11, 1, 0, 0, 0))
    assert q.until == calendar.timegm((2026, 11, 2, 12, 0, 0))  # 12:45Z, down to the hour
    assert q.group_by == ("day", "model")
    assert parse_query({"group_by": ""}).group_by == ()
    assert parse_query({"since": "2026-11-01T00:00:00Z"}).since == q.since


@pytest.mark.parametrize(("params", "param"), [
    ({"since": "yesterday"}, "since"),
    ({"since": "2026-13-01"}, "since"),
    ({"until": "2026-11-01T10:00:00"}, "until"),  # no zone
    ({"since": "2026-11-02", "until": "2026-11-01"}, "until"),
    ({"group_by": "tenant,weekday"}, "group_by"),
    ({"group_by": "tenant,tenant"}, "group_by"),
    ({"tenant": ""}, "tenant"),
    ({"tenant": "x" * 300}, "tenant"),
    ({"by": "model"}, "by"),
])
def test_bad_input_is_a_400_naming_the_parameter(params: dict[str, str], param: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_query(params)
    assert info.value.param == param
    assert info.value.message.startswith(f"{param}: ")
