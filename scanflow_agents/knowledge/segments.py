"""How a batch of events is laid out in the tags of one MLflow run.

See :mod:`.recorders` for why events are batched into segment runs. A tag
value holds at most 8,000 characters and one ``log_batch`` call at most 100
tags, so an event's JSON is cut into parts and the tags into batches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

EVENT_TAG = "scanflow.event"
_PART = 7000  # characters per tag value, under MLflow's 8,000 limit
_INDEX = 7000  # longest index tag value
_TAGS_PER_CALL = 100


def _ms(event: Mapping[str, Any]) -> int:
    return int(datetime.fromisoformat(str(event["time"])).timestamp() * 1000)


@dataclass
class Segment:
    """One run's worth of events, ready to write.

    Attributes:
        name: Run name.
        start_ms: Start time of the run: the first event's time.
        end_ms: End time of the run: the last event's time.
        index_tags: Tags set when the run is created (kind, agent, indexes).
        tag_batches: The event tags, at most 100 per ``log_batch`` call.
    """

    name: str
    start_ms: int
    end_ms: int
    index_tags: dict[str, str]
    tag_batches: list[dict[str, str]] = field(default_factory=list)


def _index(values: Sequence[str]) -> str:
    return "|" + "|".join(dict.fromkeys(values)) + "|"


def _segment(events: Sequence[Mapping[str, Any]]) -> Segment:
    tags: dict[str, str] = {}
    for seq, event in enumerate(events):
        text = json.dumps(event, sort_keys=True, default=str)
        for part, at in enumerate(range(0, len(text), _PART)):
            tags[f"{EVENT_TAG}.{seq:04d}.{part}"] = text[at : at + _PART]
    items = list(tags.items())
    times = [_ms(event) for event in events]
    return Segment(
        name=f"events {events[0]['time']}",
        start_ms=min(times),
        end_ms=max(times),
        index_tags={
            "scanflow.kind": "events",
            "scanflow.agent": str(events[0]["agent"]),
            "scanflow.events": str(len(events)),
            "scanflow.correlations": _index(
                [str(e.get("correlation_id") or e["id"]) for e in events]
            ),
            "scanflow.kinds": _index([str(e["kind"]) for e in events]),
        },
        tag_batches=[
            dict(items[at : at + _TAGS_PER_CALL]) for at in range(0, len(items), _TAGS_PER_CALL)
        ],
    )


def encode_segments(events: Sequence[Mapping[str, Any]]) -> list[Segment]:
    """Cut events (of one agent, in order) into segments whose indexes fit a tag."""
    segments: list[Segment] = []
    current: list[Mapping[str, Any]] = []
    length = 1
    for event in events:
        key = str(event.get("correlation_id") or event["id"])
        if current and length + len(key) + 1 > _INDEX:
            segments.append(_segment(current))
            current, length = [], 1
        current.append(event)
        length += len(key) + 1
    if current:
        segments.append(_segment(current))
    return segments


def decode_segment(tags: Mapping[str, str]) -> list[tuple[int, dict[str, Any]]]:
    """The ``(seq, event)`` pairs stored in a segment run's tags, in order."""
    parts: dict[int, dict[int, str]] = {}
    for key, value in tags.items():
        if key.startswith(EVENT_TAG + "."):
            seq_text, part_text = key[len(EVENT_TAG) + 1 :].split(".")
            parts.setdefault(int(seq_text), {})[int(part_text)] = value
    events: list[tuple[int, dict[str, Any]]] = []
    for seq in sorted(parts):
        chunks = parts[seq]
        events.append((seq, json.loads("".join(chunks[i] for i in sorted(chunks)))))
    return events
