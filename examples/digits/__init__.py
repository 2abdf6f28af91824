"""The digits example: a team's application (``application.yaml``) and its batch steps.

``prepare.py``, ``train.py`` and ``evaluate.py`` are scripts the platform runs
as workflow nodes; they are a package only so that the wheel ships them with
``scanflow demo`` (as ``scanflow_agents.runtime.demo.digits``), and an installed
demo finds its application without a checkout.
"""
