"""Testing agents: a harness (in memory or on real NATS), real nats-server launchers
(one server, or a three-server JetStream cluster), and a replay check of a
recorded history."""

from scanflow_agents._kit.sockets import free_port
from scanflow_agents._kit.tethers import die_with_parent
from scanflow_agents.testing.harness import AgentHarness, eventually
from scanflow_agents.testing.replays import assert_replays
from scanflow_agents.transports.clusters import NatsCluster
from scanflow_agents.transports.servers import NatsServer

__all__ = [
    "AgentHarness",
    "NatsCluster",
    "NatsServer",
    "assert_replays",
    "die_with_parent",
    "eventually",
    "free_port",
]
