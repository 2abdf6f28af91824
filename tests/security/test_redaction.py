"""The redaction helper and the log filters: what may never be printed, and floods of warnings."""

from __future__ import annotations

import logging
import re

import pytest
from pydantic import BaseModel, SecretStr

from scanflow_agents import redaction
from scanflow_agents.logs import RateLimitFilter
from scanflow_agents.redaction import MASK, RedactingFilter, mask, redact, shown_params


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("nats://bob:pa55word@nats:4222", f"nats://bob:{MASK}@nats:4222"),
        ("nats://s3cr3ttoken@nats:4222", f"nats://{MASK}@nats:4222"),
        (
            "tls://a:b@n1:4222,tls://c:d@n2:4222",
            f"tls://a:{MASK}@n1:4222,tls://c:{MASK}@n2:4222",
        ),
        ("MLflow unreachable at https://u:p%40ss@ml/ while x", f"https://u:{MASK}@ml/"),
        ("http://ml:5000/api?token=abc&run=1", f"http://ml:5000/api?token={MASK}&run=1"),
        ("see https://ml:5000/#/runs and mail bob@example.org", "see https://ml:5000/#/runs"),
    ],
)
def test_urls_and_query_secrets(text: str, shown: str) -> None:
    assert shown in redact(text)


def test_remembered_secrets_are_masked_anywhere() -> None:
    class Tree(BaseModel):
        password: SecretStr
        url: str

    redaction.remember_model(
        Tree(password=SecretStr("remembered-pw-1"), url="nats://u:url-pw-2@h:1")
    )
    text = redact("library said: login remembered-pw-1 failed; url-pw-2 too")
    assert "remembered-pw-1" not in text
    assert "url-pw-2" not in text
    # Too short to be searched for without mangling every log line.
    redaction.remember("ab")
    assert redact("a tab b") == "a tab b"


def test_mask_and_shown_params() -> None:
    class Params(BaseModel):
        name: str
        key: SecretStr
        url: str = "http://x"

    params = Params(name="n", key=SecretStr("k3y-value"), url="https://u:pw@h/")
    assert shown_params(params) == {"name": "n", "key": MASK, "url": f"https://u:{MASK}@h/"}
    assert shown_params(Params(name="n", key=SecretStr("k"))) == {"name": "n", "key": MASK}
    assert mask({"a": [SecretStr("x"), "nats://t0ken@h"]}) == {"a": [MASK, f"nats://{MASK}@h"]}


def test_the_logging_filter_covers_arguments_and_tracebacks() -> None:
    record = logging.LogRecord(
        "nats.aio.client",
        logging.ERROR,
        __file__,
        1,
        "connect to %s failed",
        ("nats://u:pw1@h",),
        None,
    )
    try:
        raise OSError("cannot reach nats://u:pw1@h")
    except OSError:
        import sys

        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"connect to nats://u:{MASK}@h failed"
    assert record.exc_text is not None
    assert "pw1" not in record.exc_text


def test_rate_limit_counts_what_it_held_back() -> None:
    now = [0.0]
    limiter = RateLimitFilter(10.0, clock=lambda: now[0])

    def warn(agent: str, detail: str) -> logging.LogRecord:
        return logging.LogRecord(
            "scanflow_agents.running",
            logging.WARNING,
            __file__,
            1,
            "agent %r got a malformed call on %s: %s",
            (agent, "subj", detail),
            None,
        )

    shown = [r for i in range(1000) if limiter.filter(r := warn("a", str(i)))]
    assert len(shown) == 1
    assert limiter.filter(warn("b", "x"))  # another agent is another kind
    assert not limiter.filter(warn("a", "late"))
    now[0] = 10.5
    record = warn("a", "after")
    assert limiter.filter(record)
    assert re.search(r": after \(1,000 more since \d\d:\d\d:\d\d\)$", record.getMessage())
    # INFO and DEBUG are never limited; one record is decided once for every handler.
    info = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert all(limiter.filter(info) for _ in range(5))
    twice = warn("c", "1")
    assert limiter.filter(twice)
    assert limiter.filter(twice)


async def test_handler_errors_are_redacted_in_replies_records_and_descriptions() -> None:
    from scanflow_agents import Agent, HandlerFailed, actuator, sensor
    from scanflow_agents.testing import AgentHarness

    class Leaky(Agent, name="leaky"):
        @actuator()
        async def fetch(self) -> None:
            raise ConnectionError("cannot reach https://svc:Leaked-Pw-1@api.example/v1")

        @sensor(every=60)
        async def probe(self) -> None:
            raise ConnectionError("cannot reach nats://Leaked-Token-2@nats:4222")

    async with AgentHarness(Leaky()) as h:
        with pytest.raises(HandlerFailed) as failed:
            await h.call("leaky", "fetch")
        await h.run_sensor("leaky", "probe")
        await h.settle()
        description = await h.client.describe("leaky")
    shown = f"{failed.value} {h.events} {description}"
    assert f"https://svc:{MASK}@api.example/v1" in str(failed.value)
    assert f"nats://{MASK}@nats:4222" in str(description)
    assert "Leaked-Pw-1" not in shown
    assert "Leaked-Token-2" not in shown


SCRIPT = """
import io, logging
from scanflow_agents import logs
logs.configure("DEBUG", interval=5)
late = io.StringIO()
logging.getLogger().addHandler(logging.StreamHandler(late))  # added after, as the demo does
for attempt in range(50):
    logging.getLogger("nats.aio.client").warning("cannot connect to %s", "nats://u:pw-42@h:1")
logging.getLogger("scanflow_agents.running").warning("agent %r is %s", "other", "fine")
print(late.getvalue(), end="")
"""


def test_configure_redacts_for_later_handlers_too() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    for output in (done.stdout, done.stderr):
        assert "pw-42" not in output
    # Redaction reaches the later handler; the rate limit is on the handlers there were.
    assert done.stdout.count(f"cannot connect to nats://u:{MASK}@h:1") == 50
    assert done.stderr.count("cannot connect") == 1
    assert "agent 'other' is fine" in done.stderr
