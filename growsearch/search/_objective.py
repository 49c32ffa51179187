"""One trial: select parent -> transform -> check -> train -> persist.

Persistence order is what makes a crash harmless: the lineage row is created as ``running``, the
checkpoint is written atomically, and only then is the row marked ``finished`` with the file's
sha256. A row never points at a partial file; a file without a finished row is just unused.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from growsearch.builder import GrowNet, build_model
from growsearch.checkpoints import load_checkpoint, save_checkpoint
from growsearch.config import StudyConfig
from growsearch.data import DeviceData
from growsearch.exceptions import (
    CheckpointError,
    GrowsearchError,
    PreservationError,
    TrainingDivergedError,
    TransformError,
)
from growsearch.preservation import check_preservation
from growsearch.search._dashboard import publish_trial
from growsearch.search._optuna import ROLE_ATTR
from growsearch.search._policy import select_parent
from growsearch.search._progress import Reporter
from growsearch.search._space import NoPlaceError, Proposal, propose
from growsearch.spec import Spec
from growsearch.store import LineageStore, ModelRecord
from growsearch.training import (
    EpochResult,
    load_optimizer_state_by_name,
    make_optimizer,
    optimizer_state_by_name,
    train,
)
from growsearch.transforms import GrowResult, apply_operations

__all__ = ["TrialRunner"]

SEED_WAIT_S = 1.0


@dataclass
class _Child:
    spec: Spec
    model: GrowNet
    parent: ModelRecord | None
    proposal: Proposal | None
    grow: GrowResult | None
    preservation_error: float | None
    optimizer_state: dict[str, dict[str, torch.Tensor]] | None = None
    info: dict[str, Any] = field(default_factory=dict)


class TrialRunner:
    """The objective function handed to ``study.optimize``; one instance per worker process."""

    def __init__(
        self,
        cfg: StudyConfig,
        store: LineageStore,
        data: DeviceData,
        device: torch.device,
        reporter: Reporter,
        artifact_store: Any | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.data = data
        self.device = device
        self.reporter = reporter
        self.artifact_store = artifact_store
        self.on_start = on_start
        self.train_cfg = cfg.train
        self.directions = ["maximize"] + ["minimize"] * (len(cfg.search.objectives) - 1)
        self.checkpoint_root = Path(cfg.checkpoint_dir).resolve() / _safe(cfg.name)
        self._probe: torch.Tensor | None = None

    # ---- the objective ------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        if self.on_start is not None:
            self.on_start()  # the trial exists now: let the next worker be admitted
        model_id: int | None = None
        try:
            child = self._make_child(trial)
            model_id = self._start_record(trial, child)
            return self._train_and_persist(trial, child, model_id)
        except optuna.TrialPruned as e:
            if model_id is not None:
                self.store.fail_model(model_id, "pruned", str(e) or "pruned")
            self.reporter.trial_pruned(trial.number, str(e))
            raise
        except BaseException as e:
            reason = _reason(e)
            trial.set_user_attr("fail_reason", reason[:2000])
            if model_id is not None:
                status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
                self.store.fail_model(model_id, status, reason)
            self.reporter.trial_failed(trial.number, reason, expected=_expected(e))
            raise

    # ---- steps --------------------------------------------------------------------------
    def _make_child(self, trial: optuna.Trial) -> _Child:
        cfg = self.cfg
        parent = self._parent_for(trial)
        if parent is None:
            trial.set_user_attr(ROLE_ATTR, "seed")
            model = build_model(cfg.model, seed=cfg.seed).to(self.device)
            self.reporter.trial_start(trial.number, None, "seed", cfg.model)
            return _Child(cfg.model, model, None, None, None, None)

        parent_spec = Spec.from_dict(parent.spec)
        try:
            proposal = propose(trial, parent_spec, cfg.search)
        except NoPlaceError as e:
            raise optuna.TrialPruned(str(e)) from None
        try:
            ckpt = load_checkpoint(parent.checkpoint, expected_sha256=parent.sha256, device="cpu")
        except CheckpointError as e:
            # Never choose this parent again; the study goes on from another one.
            self.store.mark_checkpoint_lost(parent.model_id, str(e))
            raise
        grow = apply_operations(
            parent_spec,
            ckpt.state_dict,
            proposal.operations,
            np.random.default_rng([cfg.seed, trial.number]),
            init=cfg.search.init,
            optimizer_state=ckpt.optimizer_state if cfg.search.optimizer_state == "grow" else None,
        )
        self._check_constraints(grow.spec)
        duplicate = self.store.find_duplicate(cfg.name, parent.model_id, grow.spec.hash)
        if duplicate is not None:
            trial.set_user_attr("duplicate_of_model", duplicate.model_id)
            raise optuna.TrialPruned(
                f"duplicate child: model {duplicate.model_id} (trial {duplicate.trial_number}) "
                "already has this architecture from the same parent"
            )
        self.reporter.trial_start(trial.number, parent, _op_label(proposal), grow.spec)
        parent_model = build_model(parent_spec)
        parent_model.load_state_dict(ckpt.state_dict, strict=True)
        parent_model.to(self.device)
        model = build_model(grow.spec)
        model.load_state_dict(grow.state_dict, strict=True)
        model.to(self.device)
        result = check_preservation(
            parent_model, model, self._probe_batch(), rtol=cfg.search.preservation_rtol
        )
        error = float(result.max_abs_error)
        trial.set_user_attr("preservation_error", _json_float(error))
        trial.set_user_attr("preservation_tolerance", _json_float(result.tolerance))
        if grow.exact and not result.ok:
            raise PreservationError(_op_label(proposal), error, result.tolerance)
        check = {
            "preservation_tolerance": _json_float(result.tolerance),
            "max_parent_output": _json_float(result.max_parent_output),
            "probe_size": int(self._probe_batch().shape[0]),
        }
        return _Child(grow.spec, model, parent, proposal, grow, error, grow.optimizer_state, check)

    def _parent_for(self, trial: optuna.Trial) -> ModelRecord | None:
        """None means: this trial trains the seed."""
        cfg = self.cfg
        # A heartbeat retry carries the killed attempt's user attributes: same parent.
        retried_parent = trial.user_attrs.get("parent_model_id")
        if retried_parent is not None:
            return self.store.get_model(int(retried_parent))
        if trial.user_attrs.get(ROLE_ATTR) == "seed":
            return None
        while True:
            parent = select_parent(trial, self.store, cfg.name, cfg.search, self.directions)
            if parent is not None:
                return parent
            # No finished model yet: wait for a seed that is being trained, or become the seed.
            if not self._seed_pending(trial):
                return None
            time.sleep(SEED_WAIT_S)

    def _seed_pending(self, trial: optuna.Trial) -> bool:
        states = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
        for t in trial.study.get_trials(deepcopy=False, states=states):
            if t.number != trial.number and t.user_attrs.get(ROLE_ATTR) == "seed":
                return True
        return False

    def _check_constraints(self, spec: Spec) -> None:
        s = self.cfg.search
        if s.max_params is not None and spec.num_params > s.max_params:
            raise optuna.TrialPruned(
                f"child has {spec.num_params} parameters > search.max_params {s.max_params}"
            )
        if s.max_depth is not None and spec.depth > s.max_depth:
            raise optuna.TrialPruned(f"child depth {spec.depth} > search.max_depth {s.max_depth}")

    def _start_record(self, trial: optuna.Trial, child: _Child) -> int:
        parent = child.parent
        ops = [op.to_dict() for op in child.proposal.operations] if child.proposal else []
        operation = "+".join(op["name"] for op in ops) if ops else "seed"
        info: dict[str, Any] = dict(child.grow.info) if child.grow else {}
        info.update(child.info)
        info["init"] = self.cfg.search.init if parent else "scratch"
        retried = trial.user_attrs.get("model_id")
        if retried is not None:
            info["retry_of_model"] = retried
        model_id = self.store.start_model(
            study=self.cfg.name,
            trial_number=trial.number,
            parent_id=parent.model_id if parent else None,
            operation=operation,
            args=ops,
            spec_dict=child.spec.to_dict(),
            spec_hash=child.spec.hash,
            num_params=child.spec.num_params,
            flops=child.spec.flops,
            generation=(parent.generation + 1) if parent else 0,
            info=info,
        )
        attrs: dict[str, Any] = {
            "model_id": model_id,
            "parent_trial": parent.trial_number if parent else None,
            "parent_model_id": parent.model_id if parent else None,
            "operation": operation,
            "operation_args": ops,
            "params": child.spec.num_params,
            "flops": child.spec.flops,
            "generation": (parent.generation + 1) if parent else 0,
            "spec_hash": child.spec.hash,
            "spec": child.spec.summary(),
            "preservation_error": _json_float(child.preservation_error),
        }
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return model_id

    def _train_and_persist(
        self, trial: optuna.Trial, child: _Child, model_id: int
    ) -> float | tuple[float, ...]:
        cfg = self.cfg
        seed_model = child.parent is None
        epochs = cfg.train.epochs_for_seed if seed_model else cfg.train.epochs_per_trial
        lr = child.proposal.lr if child.proposal and child.proposal.lr else None
        optimizer = make_optimizer(child.model, self.train_cfg, lr=lr)
        if child.optimizer_state:
            load_optimizer_state_by_name(optimizer, child.model, child.optimizer_state)
        single = len(cfg.search.objectives) == 1

        def on_epoch(r: EpochResult) -> None:
            self.store.add_evaluation(
                model_id, r.epoch, r.val_accuracy, r.val_loss, r.train_loss, r.seconds
            )
            self.reporter.epoch(trial.number, r, epochs)
            if single:  # Optuna cannot prune multi-objective trials
                trial.report(r.val_accuracy, r.epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(
                        f"pruned by {type(trial.study.pruner).__name__} at epoch {r.epoch} "
                        f"(val_accuracy {r.val_accuracy:.4f})"
                    )

        torch.manual_seed(cfg.seed * 100_003 + trial.number)
        result = train(
            child.model,
            self.data,
            self.train_cfg,
            epochs=epochs,
            optimizer=optimizer,
            generator_seed=cfg.seed * 100_003 + trial.number,
            on_epoch=on_epoch,
            lr=lr,
        )
        acc = float(result.final.val_accuracy)
        objectives = [acc] + [
            float(child.spec.num_params if o == "params" else child.spec.flops)
            for o in cfg.search.objectives[1:]
        ]
        path = self.checkpoint_root / f"model-{model_id:06d}.safetensors"
        opt_state = (
            optimizer_state_by_name(optimizer, child.model)
            if cfg.search.optimizer_state == "grow"
            else None
        )
        sha = save_checkpoint(
            path,
            child.spec,
            {k: v.detach() for k, v in child.model.state_dict().items()},
            optimizer_state=opt_state,
            metadata={"study": cfg.name, "model_id": model_id, "trial": trial.number},
        )
        self.store.finish_model(
            model_id,
            val_accuracy=acc,
            objectives=objectives,
            checkpoint=str(path),
            sha256=sha,
            preservation_error=child.preservation_error,
            train_seconds=result.seconds,
        )
        trial.set_user_attr("checkpoint", str(path))
        trial.set_user_attr("train_seconds", round(result.seconds, 3))
        publish_trial(trial, self.artifact_store, path, child, acc)
        best = self.store.best(cfg.name)
        self.reporter.trial_done(trial.number, acc, best.val_accuracy if best else acc, result)
        return acc if single else tuple(objectives)

    def _probe_batch(self) -> torch.Tensor:
        if self._probe is None:
            self._probe = self.data.probe(self.cfg.search.probe_size)
        return self._probe


def _op_label(proposal: Proposal | None) -> str:
    if proposal is None:
        return "seed"
    parts = []
    for op in proposal.operations:
        args = ", ".join(f"{k}={v}" for k, v in op.args.items())
        parts.append(f"{op.name}({op.target}{', ' + args if args else ''})")
    return " + ".join(parts)


def _json_float(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


_EXPECTED = (
    PreservationError,
    TrainingDivergedError,
    CheckpointError,
    TransformError,
    NoPlaceError,
    GrowsearchError,
    KeyboardInterrupt,
)


def _expected(e: BaseException) -> bool:
    return isinstance(e, _EXPECTED)


def _reason(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return f"out of memory: {e}"
    if _expected(e):
        return f"{type(e).__name__}: {e}"
    return "".join(traceback.format_exception(e)).strip()
