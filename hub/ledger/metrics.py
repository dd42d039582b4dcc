"""The ledger's Prometheus series, read from its in-memory state at scrape time.

- ``spokehub_cost_total{tenant,model,tier}``: cost of the answers this process served
  (the ``prices:`` currency; models without a price add nothing);
- ``spokehub_budget_state{tenant}``: 0 ok, 1 soft limit reached, 2 hard limit reached;
- ``spokehub_budget_used_ratio{tenant,window,kind}``: usage over each limit set
  (window ``daily`` | ``monthly``, kind ``tokens`` | ``cost``);
- ``spokehub_ledger_write_errors_total``: batches the ledger file refused (kept and
  retried).

Tenants are labelled like ``spokehub_tenant_tokens_total``: the first
``metrics.max_tenants`` by name, the rest as ``other`` (whose budget gauges, a mix of
tenants, are left out).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.ledger.budgets import judge, ratios
from hub.ledger.ledger import Ledger

OTHER_TENANT = "other"


class LedgerCollector(Collector):
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[Metric]:
        ledger = self.ledger
        cost = CounterMetricFamily("spokehub_cost", "Cost of answers served, in the "
                                   "currency of the price table",
                                   labels=["tenant", "model", "tier"])
        for (tenant, model, tier), value in ledger.costs.items():
            cost.add_metric([tenant, model, tier], value)
        yield cost
        state = GaugeMetricFamily("spokehub_budget_state", "Budget state: 0 ok, 1 soft "
                                  "limit reached, 2 hard limit reached", labels=["tenant"])
        ratio = GaugeMetricFamily("spokehub_budget_used_ratio", "Usage over a budget limit",
                                  labels=["tenant", "window", "kind"])
        now = ledger.clock()
        for tenant in sorted(ledger.totals.tenants() | set(ledger.budgets.tenants)):
            budget = ledger.budgets.for_tenant(tenant)
            if budget.unlimited:
                continue
            label = ledger.tenant_label(tenant)
            if label == OTHER_TENANT and tenant != OTHER_TENANT:
                continue
            used = ledger.used(tenant, now)
            state.add_metric([label], float(judge(budget, *used).state))
            for window, kind, value in ratios(budget, *used):
                ratio.add_metric([label, window, kind], value)
        yield state
        yield ratio
        yield CounterMetricFamily("spokehub_ledger_write_errors", "Ledger batches the "
                                  "file refused (kept and retried)",
                                  value=float(ledger.writer.commit_errors))

    def describe(self) -> Iterator[Metric]:
        return iter(())
