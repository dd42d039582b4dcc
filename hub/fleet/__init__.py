"""The fleet's state: the registry (single owner of every worker's state), the active
prober, agent registrations with their TTLs, and the state file that keeps agent
workers across restarts. Worker state flows in here from config, probes, agents and
passive outcomes; routing only reads it. It must not import the request path."""
