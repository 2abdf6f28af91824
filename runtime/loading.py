"""Find agent classes from what a user types: ``module:Class``, ``file.py:Class`` or ``file.py``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from scanflow_agents import Agent

#: The built-in agents by name, in the loop's order: monitor, analyse, plan, execute.
BUILTIN_AGENTS = {
    "tracker": "scanflow_agents.builtin.tracker:Tracker",
    "checker": "scanflow_agents.builtin.checker:Checker",
    "improver": "scanflow_agents.builtin.improver:Improver",
    "planner": "scanflow_agents.builtin.planner:Planner",
}


class LoadError(Exception):
    """An agent reference cannot be resolved; the message says what to fix."""


def classes_for_command(references: Sequence[str]) -> list[type[Agent]]:
    """The agent classes of a command's references, or a click error that says why not.

    An error raised by the user's own module is printed with its traceback
    first: the one-line message alone would hide where it came from.
    """
    import click

    try:
        return [klass for ref in references for klass in load_agent_classes(ref)]
    except LoadError as exc:
        logging.getLogger("scanflow_agents.runtime").debug("load failed", exc_info=exc)
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, ModuleNotFoundError):
            traceback.print_exception(cause, file=sys.stderr)
        raise click.ClickException(str(exc)) from exc


def load_agent_classes(reference: str) -> list[type[Agent]]:
    """Resolve one reference into agent classes.

    ``pkg.module:Class`` and ``path/to/file.py:Class`` name one class;
    ``path/to/file.py`` or ``pkg.module`` alone mean every ``Agent`` subclass
    defined in that module, or, for a package that defines none itself, every
    one it exports in ``__all__`` (``scanflow_agents.builtin.tracker``).
    Errors raised while importing the user's module are not hidden: they
    propagate with their traceback, wrapped in a :class:`LoadError` that names
    the reference.
    """
    target, _, class_name = reference.partition(":")
    module = _import(target, reference)
    if class_name:
        klass = getattr(module, class_name, None)
        if not (inspect.isclass(klass) and issubclass(klass, Agent)):
            found = ", ".join(c.__name__ for c in _agents_in(module)) or "none"
            raise LoadError(
                f"{reference}: {module.__name__} has no Agent subclass {class_name!r} "
                f"(agents there: {found})"
            )
        return [klass]
    classes = _agents_in(module) or _agents_exported(module)
    if not classes:
        raise LoadError(
            f"{reference}: no Agent subclass is defined in {module.__name__}; "
            "name one as module:Class"
        )
    return classes


def _agents_exported(module: ModuleType) -> list[type[Agent]]:
    exported = [getattr(module, name, None) for name in getattr(module, "__all__", ())]
    return [
        value
        for value in exported
        if inspect.isclass(value) and issubclass(value, Agent) and value is not Agent
    ]


def _agents_in(module: ModuleType) -> list[type[Agent]]:
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, Agent)
        and value is not Agent
        and value.__module__ == module.__name__
    ]


def _import(target: str, reference: str) -> ModuleType:
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise LoadError(f"{reference}: no such file {target}")
        name = f"scanflow_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise LoadError(f"{reference}: cannot load {target} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # Let the file import its neighbours, as `python file.py` would.
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise LoadError(f"{reference}: importing {target} failed: {exc!r}") from exc
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise LoadError(f"{reference}: no module named {target!r}") from exc
        raise LoadError(f"{reference}: importing {target} failed: {exc!r}") from exc
    except Exception as exc:
        raise LoadError(f"{reference}: importing {target} failed: {exc!r}") from exc
