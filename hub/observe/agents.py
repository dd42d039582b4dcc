"""``spokehub_agent_heartbeat_age_seconds{agent}``: seconds since each agent the hub
knows last sent a heartbeat, read from the agent book at scrape time (read-only)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.fleet.agents import AgentBook


class AgentHeartbeatCollector(Collector):
    def __init__(self, agents: AgentBook) -> None:
        self.agents = agents

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("spokehub_agent_heartbeat_age_seconds",
                                   "Seconds since the agent's last heartbeat",
                                   labels=["agent"])
        book = self.agents
        now = book.clock()
        for agent_id, rec in list(book.records.items()):
            family.add_metric([agent_id], max(0.0, now - rec.last_seen))
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())
