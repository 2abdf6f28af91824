"""Testing agents: a harness (in memory or on real NATS) and a real nats-server launcher."""

from scanflow_agents._kit.sockets import free_port
from scanflow_agents._kit.tethers import die_with_parent
from scanflow_agents.testing.harness import AgentHarness, eventually
from scanflow_agents.transports.servers import NatsServer

__all__ = ["AgentHarness", "NatsServer", "die_with_parent", "eventually", "free_port"]
