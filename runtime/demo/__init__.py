"""``scanflow demo``: the whole supervised loop on one machine, shown live, measured at the end.

An embedded stack (NATS with JetStream, an MLflow server, the four built-in
agents in this process) supervises the digits example while real HTTP traffic
drifts and spikes; the demo then computes what happened from the audit trail
and its own request records, prints a summary, and writes a report with plots.

Modules: ``stack`` (the servers and agents), ``scenario`` (data and phases),
``traffic`` (the HTTP clients), ``watching`` (the event log), ``view`` (the live
terminal view), ``running`` (the story from bootstrap to report), ``summary``,
``report`` and ``command`` (the click command).
"""
