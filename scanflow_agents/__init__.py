"""Scanflow Agents: supervise machine-learning workflows with agents.

Write an agent by subclassing :class:`Agent` and declaring methods with
:func:`sensor` (observe), :func:`rule` (decide) and :func:`actuator` (act).
"""

from scanflow_agents import chains
from scanflow_agents.actuators import ActuatorSpec, Rate, actuator
from scanflow_agents.agents import Agent
from scanflow_agents.errors import (
    BadInput,
    BadMessage,
    Busy,
    CallError,
    CallTimeout,
    DefinitionError,
    ErrorCode,
    HandlerFailed,
    IncompatibleVersion,
    InDoubt,
    NotFound,
    PermanentError,
    Rejected,
    TemporaryError,
    TooLarge,
    Unavailable,
)
from scanflow_agents.handlers import ErrorMode, HandlerOptions
from scanflow_agents.messages import (
    ApprovalListing,
    Call,
    Decision,
    Description,
    Envelope,
    Event,
    Heartbeat,
    Observation,
    PendingApproval,
)
from scanflow_agents.rules import RuleSpec, rule
from scanflow_agents.sensors import SensorSpec, sensor
from scanflow_agents.settings import Settings
from scanflow_agents.sources import Runs
from scanflow_agents.triggers import At, Cron, Interval, OnEvent

__version__ = "0.1.0"

__all__ = [
    "ActuatorSpec",
    "Agent",
    "ApprovalListing",
    "At",
    "BadInput",
    "BadMessage",
    "Busy",
    "Call",
    "CallError",
    "CallTimeout",
    "Cron",
    "Decision",
    "DefinitionError",
    "Description",
    "Envelope",
    "ErrorCode",
    "ErrorMode",
    "Event",
    "HandlerFailed",
    "HandlerOptions",
    "Heartbeat",
    "InDoubt",
    "IncompatibleVersion",
    "Interval",
    "NotFound",
    "Observation",
    "OnEvent",
    "PendingApproval",
    "PermanentError",
    "Rate",
    "Rejected",
    "RuleSpec",
    "Runs",
    "SensorSpec",
    "Settings",
    "TemporaryError",
    "TooLarge",
    "Unavailable",
    "__version__",
    "actuator",
    "chains",
    "rule",
    "sensor",
]
