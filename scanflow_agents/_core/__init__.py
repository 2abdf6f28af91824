"""The machinery that runs agents. Private: users import from ``scanflow_agents``.

The straight path of one observation, in the order the functions run:

1. ``scheduling.Scheduler`` fires a time-triggered sensor's job, which calls
   ``running.AgentRuntime.run_sensor_guarded`` (a tracked task, so a stopping
   agent waits for it); an event sensor is started by the durable consumer
   of ``consuming.EventConsumers`` instead. Both run only on the replica
   that holds the agent's lease (``leading.Leadership``).
2. ``reacting.Reactor.run_sensor`` runs the sensor through
   ``executing.execute`` (timeout, retries, error mode) inside the chain
   (``scanflow_agents.chains``) of what triggered it.
3. ``recording.Recorder.record`` stores the ``observation`` event; its id
   becomes the ``Observation.id`` that rules receive.
4. ``Reactor.react`` → ``Reactor.run_rule`` runs each rule watching the
   sensor; a ``Decision`` is recorded (``decision`` event, caused by the
   observation) before any of its calls is made.
5. ``running.AgentRuntime.call`` makes each call in the decision's chain:
   ``calling.remote_call`` over the transport, or straight to the local
   dispatcher for the agent's own actuators.
6. On the receiving agent, ``dispatching.Dispatcher.on_call`` (the call
   subscription's callback) admits the call or answers ``busy``, and spawns
   ``Dispatcher.serve``: decode, validate, claim a keyed call in the shared
   store (``guards``), guard (cooldown, rate, dry-run), ``execute`` the
   actuator.
7. ``Recorder.enqueue`` queues the ``action`` event, caused by the call; the
   reply is sent once the stream has stored it.

The parts (Reactor, Dispatcher, Controller, Scheduler, Knowledge) are given
only the functions they use (``ports``), and know the agent only as an
``AgentSpec``; ``running`` wires them together and owns the lifecycle. The
operator's switches are one ``switches.ControlState`` that only the
Controller changes; decisions waiting for a person, and their expiry, are
``approvals.Approvals``.
"""
