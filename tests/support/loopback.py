"""A blocking JSON-over-HTTP helper for tests (run it in a thread from async tests).

One new connection per request, like many independent clients: with
SO_REUSEPORT the kernel picks a replica per connection, so this spreads load
and sees every replica, where a keep-alive client would stick to one.
"""

from __future__ import annotations

import http.client
import json
from typing import Any


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Send one request to 127.0.0.1:``port`` and return (status, decoded body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json", "Connection": "close"}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode()
    finally:
        connection.close()
