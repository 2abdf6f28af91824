"""Names, labels and fingerprints of the objects this platform creates.

Every object carries ``app.kubernetes.io/managed-by: scanflow-agents`` and the
labels that say whose it is (team, application, workflow, node or agent).
The platform patches or deletes an object only when those labels say it is
the very object it means: an object someone else made, or one of ours made
for another node that happens to have the same name, is left alone and
reported.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "scanflow-agents"
APPLICATION = "scanflow.io/application"
WORKFLOW = "scanflow.io/workflow"
NODE = "scanflow.io/node"
TEAM = "scanflow.io/team"
AGENT = "scanflow.io/agent"
RUN = "scanflow.io/run"
COMPONENT = "app.kubernetes.io/component"

SPEC_HASH = "scanflow.io/spec-hash"  # of the rendered spec: equal means nothing to do
SPEC = "scanflow.io/spec"  # the node or agent definition, JSON: redeploy re-renders from it
MODEL_URI = "scanflow.io/model-uri"
RUN_ID = "scanflow.io/run-id"  # the run id as given (labels may have had to shorten it)
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets

_MAX = 63  # a DNS-1123 label, and a label value
_INVALID = re.compile(r"[^a-z0-9-]+")


def digest(value: Any, length: int = 16) -> str:
    """A short, stable fingerprint of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def object_name(*parts: str) -> str:
    """A valid object name (DNS-1035 label) made of ``parts`` joined by dashes.

    Names that are too long keep their start and get a hash of the whole,
    so two long names never collide by truncation.
    """
    name = _INVALID.sub("-", "-".join(parts).lower()).strip("-") or "x"
    if not name[0].isalpha():
        name = f"sf-{name}"  # Services need a letter first (DNS-1035).
    if len(name) > _MAX:
        name = f"{name[: _MAX - 9].rstrip('-')}-{digest(parts, 8)}"
    return name


def label_value(value: str) -> str:
    """``value`` fitted into a label value (63 characters, alphanumeric ends)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-._")
    if len(text) > _MAX:
        text = f"{text[: _MAX - 9].rstrip('-._')}-{digest(value, 8)}"
    return text


def labels(
    team: str,
    *,
    application: str | None = None,
    workflow: str | None = None,
    node: str | None = None,
    agent: str | None = None,
    component: str | None = None,
    run: str | None = None,
) -> dict[str, str]:
    """The labels of one object; unknown parts are left out, never guessed."""
    found = {
        MANAGED_BY: MANAGER,
        TEAM: team,
        APPLICATION: application,
        WORKFLOW: workflow,
        NODE: node,
        AGENT: agent,
        COMPONENT: component,
        RUN: None if run is None else label_value(run),
    }
    return {key: value for key, value in found.items() if value is not None}


def identity(object_labels: Mapping[str, str]) -> dict[str, str]:
    """The labels that say which object this is (not who made it or when)."""
    keys = (MANAGED_BY, WORKFLOW, NODE, AGENT, COMPONENT, RUN)
    return {key: object_labels[key] for key in keys if key in object_labels}


def matches(obj: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    """Whether ``obj`` carries every label of ``wanted`` with the same value."""
    have = _labels_of(obj)
    return all(have.get(key) == value for key, value in wanted.items())


def describe(obj: Mapping[str, Any]) -> str:
    """'Deployment team-a/serve-model' for messages."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', 'object')} {meta.get('namespace')}/{meta.get('name')}"


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """The annotations of ``obj`` (empty if none)."""
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})
