"""The wine example: a tabular application with named columns and string labels.

A winery's quality classifier: eight lab measurements of a batch (named
columns) in, a quality grade (``"low"``, ``"medium"``, ``"high"``) out. The
batch workflow ``fit`` (``split`` → ``fit``) trains a random forest and
registers it as ``wine-quality``; the online workflow ``score``
serves it from the node ``classifier``. The data (defined in ``split.py``) comes from
scikit-learn's ``make_classification``, and its covariate shift is a new
vineyard: the batches move to a region of the measurements the first model
never saw, while the grade still follows from the measurements as before.

The files are a package only so the wheel ships them with ``scanflow demo``
(as ``scanflow_agents.runtime.demo.wine``); the platform runs the steps as
scripts.
"""
