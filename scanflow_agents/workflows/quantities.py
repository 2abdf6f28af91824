"""Kubernetes resource quantities ("500m", "1Gi", "2") parsed and checked.

Resource strings are validated where they are written (the workflow file), not
where they are first used (a pod spec on a cluster, hours later): a typo such as
"1GB" or "500mi" must fail the load with the node's name in the message.
"""

from __future__ import annotations

import re
from decimal import Decimal

# Binary and decimal suffixes as the Kubernetes API accepts them; "m" (milli)
# is only meaningful for CPU, but the API accepts it everywhere, so do we.
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(\.[0-9]+)?)(?P<suffix>[a-zA-Z]*)$")


def parse_quantity(text: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity into a plain number.

    Args:
        text: A quantity such as ``"500m"``, ``"1Gi"``, ``"0.5"`` or a bare number.

    Returns:
        The value in base units (cores for CPU, bytes for memory).

    Raises:
        ValueError: If the text is not a quantity the Kubernetes API would accept.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a resource quantity")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"{text!r} is negative")
        return Decimal(str(text))
    match = _QUANTITY.match(text.strip())
    if match is None or match["suffix"] not in _SUFFIXES:
        raise ValueError(
            f"{text!r} is not a resource quantity (examples: '500m', '2', '512Mi', '1Gi')"
        )
    return Decimal(match["number"]) * _SUFFIXES[match["suffix"]]
