"""An exclusive-time profiler for one growsearch worker, by phase.

Functions a trial calls (training, checkpoint load/save, transform, preservation check, lineage
store, Optuna user attributes, dashboard notes) are wrapped for the duration of a run. Time is
charged to the innermost wrapped call only, so the phases add up to the whole run and nothing is
counted twice (``add_evaluation`` inside the epoch callback inside ``train`` is lineage-store
time, not training time). Wrapping costs a few microseconds per call.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

__all__ = ["PhaseProfiler", "instrument_worker"]


class PhaseProfiler:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[str] = []
        self._last = 0.0

    def _charge(self, now: float) -> None:
        if self._stack:
            top = self._stack[-1]
            self.seconds[top] = self.seconds.get(top, 0.0) + now - self._last
        self._last = now

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._charge(time.perf_counter())
        self._stack.append(name)
        self.calls[name] = self.calls.get(name, 0) + 1
        try:
            yield
        finally:
            self._charge(time.perf_counter())
            self._stack.pop()

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)

        return timed


@contextmanager
def _patched(obj: Any, attr: str, value: Any) -> Iterator[None]:
    old = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, old)


# (module, attribute path, phase): what the trial and the worker call by name. Names growsearch
# no longer has are skipped, so a refactoring only makes the phases coarser.
_FUNCTIONS = [
    ("growsearch.search._objective", "load_checkpoint", "checkpoint load"),
    ("growsearch.search._objective", "save_checkpoint", "checkpoint save"),
    ("growsearch.search._objective", "apply_operations", "transform"),
    ("growsearch.search._objective", "build_model", "build models"),
    ("growsearch.search._objective", "check_preservation", "preservation check"),
    ("growsearch.search._objective", "propose", "sampler (propose)"),
    ("growsearch.search._objective", "write_attrs", "Optuna user attrs (DB)"),
    ("growsearch.search._objective", "publish_trial", "dashboard (note, artifact)"),
    ("growsearch.search._objective", "trial_note", "dashboard (note)"),
    ("growsearch.search._objective", "note_attrs", "dashboard (note)"),
    ("growsearch.search._objective", "TrialRunner._upload", "dashboard (artifact)"),
    ("growsearch.search._objective", "TrialRunner._maybe_lineage", "dashboard (lineage figure)"),
    ("optuna_dashboard", "save_note", "dashboard (note)"),
    ("growsearch.search._worker", "publish_lineage", "dashboard (lineage figure)"),
    ("growsearch.search._worker", "_load_data", "setup"),
    ("growsearch.search._worker", "make_storage", "setup"),
    ("growsearch.search._worker", "open_study", "setup"),
    ("growsearch.search._worker", "reconcile", "setup"),
]
_STORE_METHODS = (
    "create_study", "start_model", "add_evaluation", "finish_model", "fail_model", "mark_killed",
    "mark_checkpoint_lost", "get_model", "find_by_trial", "models", "best", "ancestry",
    "children", "find_duplicate", "evaluations", "pareto",
)  # fmt: skip
SETUP = "setup"
TRAINING = "training"
OTHER = "Optuna, sampler bookkeeping and the worker loop"


@contextmanager
def instrument_worker(prof: PhaseProfiler) -> Iterator[list[str]]:
    """Wrap the phases of ``run_worker`` in ``prof``; yields the names of what was wrapped (a
    missing name is skipped, so a refactoring of growsearch degrades this to coarser phases)."""
    import importlib

    import optuna

    from growsearch.store import SQLLineageStore

    wrapped: list[str] = []
    with ExitStack() as stack:
        for module_name, path, phase in _FUNCTIONS:
            owner: Any = importlib.import_module(module_name)
            *parents, attr = path.split(".")
            for part in parents:
                owner = getattr(owner, part, None)
            if owner is not None and hasattr(owner, attr):
                stack.enter_context(_patched(owner, attr, prof.wrap(phase, getattr(owner, attr))))
                wrapped.append(f"{module_name}.{path}")
        objective = importlib.import_module("growsearch.search._objective")
        if hasattr(objective, "train"):
            stack.enter_context(_patched(objective, "train", _train_wrapper(prof, objective.train)))
            wrapped.append("growsearch.search._objective.train")
        worker = importlib.import_module("growsearch.search._worker")
        store_cls = worker.SQLLineageStore

        def make_store(*args: Any, **kwargs: Any) -> SQLLineageStore:
            with prof.phase(SETUP):
                return store_cls(*args, **kwargs)

        stack.enter_context(_patched(worker, "SQLLineageStore", make_store))
        for method in _STORE_METHODS:
            if hasattr(SQLLineageStore, method):
                fn = getattr(SQLLineageStore, method)
                stack.enter_context(
                    _patched(SQLLineageStore, method, prof.wrap("lineage store (DB)", fn))
                )
                wrapped.append(f"SQLLineageStore.{method}")
        trial_cls = optuna.trial.Trial
        for method in ("set_user_attr",):
            fn = getattr(trial_cls, method)
            stack.enter_context(
                _patched(trial_cls, method, prof.wrap("Optuna user attrs (DB)", fn))
            )
            wrapped.append(f"optuna.trial.Trial.{method}")
        for method in ("report", "should_prune"):
            fn = getattr(trial_cls, method)
            stack.enter_context(_patched(trial_cls, method, prof.wrap("Optuna report/prune", fn)))
            wrapped.append(f"optuna.trial.Trial.{method}")
        yield wrapped


def _train_wrapper(prof: PhaseProfiler, train: Callable[..., Any]) -> Callable[..., Any]:
    """``train`` as training time, its epoch callback as its own phase."""

    @functools.wraps(train)
    def timed(*args: Any, **kwargs: Any) -> Any:
        callback = kwargs.get("on_epoch")
        if callback is not None:
            kwargs["on_epoch"] = prof.wrap("epoch callback (progress)", callback)
        with prof.phase(TRAINING):
            return train(*args, **kwargs)

    return timed
