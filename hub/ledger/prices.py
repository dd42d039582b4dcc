"""The ``prices:`` section: what a model's tokens cost, per 1M tokens, by tier.

::

    prices:
      llama3.2:3b:                         # a model name as clients send it (after aliases)
        input_per_1m: 0.0                  # prompt tokens, per 1M
        output_per_1m: 0.0                 # completion tokens, per 1M
        fallback: {input_per_1m: 0.15, output_per_1m: 0.60}   # tier override (optional)

The currency is whatever the operator writes; the ledger only multiplies and adds. A
model without an entry costs 0 (its tokens are still counted). A tier without its own
prices uses the model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hub.config.kit import ConfigError, Section

TIERS = ("local", "fallback")
PER = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    input_per_1m: float = 0.0
    output_per_1m: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / PER


FREE = Price()


@dataclass(frozen=True, slots=True)
class ModelPrice:
    price: Price = FREE
    tiers: Mapping[str, Price] = field(default_factory=dict)

    def for_tier(self, tier: str) -> Price:
        return self.tiers.get(tier, self.price)


@dataclass(frozen=True, slots=True)
class Prices:
    models: Mapping[str, ModelPrice] = field(default_factory=dict)

    def cost(self, model: str, tier: str, prompt_tokens: int, completion_tokens: int) -> float:
        entry = self.models.get(model)
        if entry is None:
            return 0.0
        return entry.for_tier(tier).cost(prompt_tokens, completion_tokens)


def _price(s: Section, default: Price = FREE) -> Price:
    return Price(input_per_1m=s.number("input_per_1m", default.input_per_1m, exclusive_lo=False),
                 output_per_1m=s.number("output_per_1m", default.output_per_1m,
                                        exclusive_lo=False))


def parse_prices(raw: object, path: str = "prices") -> Prices:
    root = Section(raw, path)
    models: dict[str, ModelPrice] = {}
    for name in list(root.data):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{path}: model names must be non-empty strings, got {name!r}")
        s = root.section(name)
        base = _price(s)
        tiers: dict[str, Price] = {}
        for tier in TIERS:
            if s.get(tier) is not None:
                t = s.section(tier)
                tiers[tier] = _price(t, base)
                t.done()
        s.done()
        models[name] = ModelPrice(base, tiers)
    return Prices(models)
