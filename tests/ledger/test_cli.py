"""``spokehub usage``: the table it prints from an /admin/usage answer, and arguments it
refuses before calling the hub (exit 2)."""

from __future__ import annotations

import pytest

from hub.cli.main import main
from hub.cli.usage import render

DOC = {
    "since": "2026-11-01T00:00:00Z", "until": None, "group_by": ["tenant", "tier"],
    "tenant": None,
    "rows": [{"tenant": "acme", "tier": "local", "requests": 3, "prompt_tokens": 30,
              "completion_tokens": 12, "total_tokens": 42, "cost": 0.0000117},
             {"tenant": "b\x1b[2Jad", "tier": "fallback", "requests": 1, "prompt_tokens": 5,
              "completion_tokens": 5, "total_tokens": 10, "cost": 1.5}],
    "total": {"requests": 4, "prompt_tokens": 35, "completion_tokens": 17,
              "total_tokens": 52, "cost": 1.5000117},
    "budgets": [{"tenant": "acme", "state": "hard", "on_hard": "reject",
                 "daily": {"tokens": 42, "cost": 0.0, "tokens_limit": 40,
                           "cost_limit": None},
                 "monthly": {"tokens": 42, "cost": 0.0000117, "tokens_limit": None,
                             "cost_limit": 10.0}}],
}


def test_table() -> None:
    lines = render(DOC).splitlines()
    assert lines[0].split() == ["TENANT", "TIER", "REQUESTS", "PROMPT", "COMPLETION",
                                "TOTAL", "COST"]
    assert lines[1].split() == ["acme", "local", "3", "30", "12", "42", "0.000012"]
    assert "\x1b" not in lines[2]  # text from the hub is made safe for a terminal
    assert lines[3].split() == ["TOTAL", "4", "35", "17", "52", "1.500012"]
    assert "since 2026-11-01T00:00:00Z, until now (UTC)" in lines
    assert lines[-1] == ("  acme: hard (reject); daily tokens 42/40, "
                         "monthly cost 1.17e-05/10")


def test_empty() -> None:
    out = render({"group_by": [], "rows": [], "total": {}, "budgets": []})
    assert "no usage recorded" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--since", "yesterday"], "--since: must be a date"),
    (["--by", "weekday"], "--by: 'weekday' is not one of"),
    (["--since", "2026-11-02", "--until", "2026-11-01"], "--until: must be after since"),
    (["--timeout", "0"], "--timeout: must be between"),
])
def test_bad_arguments_exit_2(argv: list[str], message: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["usage", "--hub", "http://127.0.0.1:9", *argv]) == 2
    assert message in capsys.readouterr().err


def test_unreachable_hub_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["usage", "--hub", "http://127.0.0.1:9", "--timeout", "5"]) == 1
    assert "cannot reach the hub" in capsys.readouterr().err
