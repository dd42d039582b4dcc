"""The README's configuration reference is a config the hub accepts: every key it
shows exists, with a value of the right kind."""

from __future__ import annotations

from pathlib import Path

import yaml

from hub.config.schema import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_configuration_reference_parses() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Configuration reference"):]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config(yaml.safe_load(block))
    assert config.spill.tenants["acme"].enabled
    assert {w.name for w in config.workers if w.tier == "fallback"} == {"provider"}
    assert config.state.share_response_cache and config.ledger.refresh_s == 0
