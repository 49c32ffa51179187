"""One trial: select parent -> propose -> check -> transform -> train -> persist.

Persistence order is what makes a crash harmless: the lineage row is created as ``running``, the
checkpoint is written atomically, and only then is the row marked ``finished`` with the file's
sha256. A row never points at a partial file; a file without a finished row is just unused.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from growsearch.builder import GrowNet, build_model
from growsearch.checkpoints import load_checkpoint, save_checkpoint
from growsearch.config import StudyConfig, checkpoint_window
from growsearch.data import DeviceData
from growsearch.exceptions import CheckpointError, PreservationError, TransformError
from growsearch.preservation import check_preservation
from growsearch.search._attrs import write_attrs
from growsearch.search._dashboard import (
    LineagePublisher,
    note_attrs,
    trial_note,
    upload_checkpoint,
)
from growsearch.search._dbretry import DbGuard
from growsearch.search._faults import (
    check_finite_weights,
    check_parent_checkpoint,
    checkpoint_write_error,
    expected_failure,
    failure_reason,
    parent_lost,
    record_failure,
)
from growsearch.search._optuna import ROLE_ATTR, count_states
from growsearch.search._policy import select_parent
from growsearch.search._progress import Reporter
from growsearch.search._reconcile import finish_row, reconcile
from growsearch.search._space import NoPlaceError, Proposal, propose
from growsearch.search._timing import PhaseTimer
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

SEED_WAIT_S = 0.5
LIVE = ("running", "finished")  # lineage statuses that make a same-spec sibling a duplicate


@dataclass
class _Child:
    spec: Spec
    parent: ModelRecord | None
    proposal: Proposal | None
    model: GrowNet | None = None
    grow: GrowResult | None = None
    preservation_error: float | None = None
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
        admission: Any | None = None,
        db: DbGuard | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.data = data
        self.device = device
        self.reporter = reporter
        self.artifact_store = artifact_store
        self.admission = admission  # AdmissionLock (or its retrying wrapper)
        self.db = db  # retries the writes that bypass the (protected) storage
        self.train_cfg = cfg.train
        self.directions = ["maximize"] + ["minimize"] * (len(cfg.search.objectives) - 1)
        self.checkpoint_root = Path(cfg.checkpoint_dir).resolve() / _safe(cfg.name)
        self.lineage = LineagePublisher(store)
        self.worker = {"host": socket.gethostname(), "pid": os.getpid()}
        self._probe: torch.Tensor | None = None
        self._best_seen: float | None = None
        self._slow_save_said = False
        # trial number -> (model id, finish_model arguments), waiting for Optuna's verdict
        self.pending: dict[int, tuple[int, dict[str, Any]]] = {}
        self.reconciled_at = -1  # COMPLETE trials counted when the lineage was last reconciled

    def settle(self, trial: FrozenTrial) -> None:
        """After Optuna recorded the trial: finish its lineage row if it is COMPLETE."""
        entry = self.pending.pop(trial.number, None)
        if entry is None:
            return
        model_id, result = entry
        if trial.state == TrialState.COMPLETE:
            finish_row(self.store, model_id, result)
        else:
            self.store.fail_model(
                model_id, "failed", f"Optuna recorded the trial {trial.state.name}"
            )

    # ---- the objective ------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        if self.admission is not None:
            self.admission.release()  # the trial exists now: let the next worker be admitted
        timer = PhaseTimer()
        model_id: int | None = None
        try:
            child = self._propose_child(trial, timer)
            self._grow(trial, child, timer)
            with timer.phase("db"):
                model_id = self._start_record(trial, child)
                self._refuse_concurrent_duplicate(child, model_id)
            return self._train_and_persist(trial, child, model_id, timer)
        except optuna.TrialPruned as e:
            trial.set_user_attr("prune_reason", str(e)[:2000])
            if model_id is not None:
                self.store.fail_model(model_id, "pruned", str(e) or "pruned")
            self.reporter.trial_pruned(trial.number, str(e))
            raise
        except BaseException as e:
            reason = failure_reason(e)
            record_failure(trial, self.store, model_id, e, reason, self.reporter.line)
            self.reporter.trial_failed(trial.number, reason, expected=expected_failure(e))
            raise

    # ---- steps --------------------------------------------------------------------------
    def _propose_child(self, trial: optuna.Trial, timer: PhaseTimer) -> _Child:
        """Parent and mutation, checked on specs alone: a child that breaks a constraint or
        repeats a sibling is refused before any tensor is loaded."""
        cfg = self.cfg
        with timer.phase("select_parent"):
            parent = self._parent_for(trial)
        if parent is None:
            with timer.phase("db"):
                self._check_constraints(trial, cfg.model)  # feasible: the config checked it
            self.reporter.trial_start(trial.number, None, "seed", cfg.model)
            return _Child(cfg.model, None, None)
        parent_spec = Spec.from_dict(parent.spec)
        try:
            with timer.phase("propose"):
                proposal = propose(trial, parent_spec, cfg.search)
        except (NoPlaceError, TransformError) as e:
            raise optuna.TrialPruned(str(e)) from None
        with timer.phase("db"):
            self._check_constraints(trial, proposal.spec)
            twin = self._sibling_with(parent.model_id, proposal.spec.hash, before=None)
        if twin is not None:
            trial.set_user_attr("duplicate_of_model", twin.model_id)
            raise optuna.TrialPruned(
                f"duplicate child: model {twin.model_id} (trial {twin.trial_number}, "
                f"{twin.status}) already has this architecture from the same parent"
            )
        self.reporter.trial_start(trial.number, parent, _op_label(proposal), proposal.spec)
        return _Child(proposal.spec, parent, proposal)

    def _grow(self, trial: optuna.Trial, child: _Child, timer: PhaseTimer) -> None:
        """Build the child's weights: the seed from scratch, others from the parent's checkpoint
        through the exact transform, gated by the preservation check."""
        cfg = self.cfg
        if child.parent is None:
            with timer.phase("transform"):
                child.model = build_model(cfg.model, seed=cfg.seed).to(self.device)
            return
        parent, proposal = child.parent, child.proposal
        assert proposal is not None
        with timer.phase("load_parent"):
            try:
                if not parent.checkpoint:
                    raise CheckpointError(f"model {parent.model_id} has no checkpoint recorded")
                ckpt = load_checkpoint(
                    parent.checkpoint, expected_sha256=parent.sha256, device="cpu"
                )
                check_parent_checkpoint(ckpt, parent)
            except CheckpointError as e:
                # Never chosen again; the study goes on from another parent.
                raise parent_lost(self.store, parent, e) from None
        with timer.phase("transform"):
            # A retry draws the same random split as the attempt it replaces.
            origin = _retried_from(trial)
            grow = apply_operations(
                Spec.from_dict(parent.spec),
                ckpt.state_dict,
                proposal.operations,
                np.random.default_rng([cfg.seed, trial.number if origin is None else origin]),
                init=cfg.search.init,
                optimizer_state=ckpt.optimizer_state
                if cfg.search.optimizer_state == "grow"
                else None,
            )
            parent_model = build_model(Spec.from_dict(parent.spec))
            parent_model.load_state_dict(ckpt.state_dict, strict=True)
            parent_model.to(self.device)
            model = build_model(grow.spec)
            model.load_state_dict(grow.state_dict, strict=True)
            model.to(self.device)
        with timer.phase("preservation"):
            probe = self._probe_batch()
            result = check_preservation(
                parent_model, model, probe, rtol=cfg.search.preservation_rtol
            )
        error = float(result.max_abs_error)
        if grow.exact and not result.ok:
            trial.set_user_attr("preservation_error", _json_float(error))
            raise PreservationError(_op_label(proposal), error, result.tolerance)
        child.spec, child.model, child.grow, child.preservation_error = (
            grow.spec,
            model,
            grow,
            error,
        )
        child.info = {
            **grow.info,
            "preservation_tolerance": _json_float(result.tolerance),
            "max_parent_output": _json_float(result.max_parent_output),
            "probe_size": int(probe.shape[0]),
        }

    def _parent_for(self, trial: optuna.Trial) -> ModelRecord | None:
        """None means: this trial trains the seed. A parent that failed, diverged, was killed or
        lost its checkpoint is never returned (the policies only see finished models)."""
        cfg = self.cfg
        # A heartbeat retry carries the killed attempt's user attributes: same parent.
        retried = trial.user_attrs.get("parent_model_id")
        if retried is not None:
            parent = self.store.get_model(int(retried))
            if parent is not None and parent.status == "finished":
                return parent
            self.reporter.line(
                f"[trial {trial.number}] the retried attempt's parent model {retried} is "
                f"{parent.status if parent else 'gone'}; choosing another parent"
            )
        if trial.user_attrs.get(ROLE_ATTR) == "seed":
            return None
        while True:
            parent = select_parent(trial, self.store, cfg.name, cfg.search, self.directions)
            if parent is not None:
                return parent
            # Nothing has finished yet: wait for the seed being trained, or become the seed.
            if self._claim_seed(trial):
                return None
            time.sleep(SEED_WAIT_S)

    def _claim_seed(self, trial: optuna.Trial) -> bool:
        """Under the admission lock, so two waiting trials never both become seeds."""
        if self.admission is not None:
            self.admission.acquire()
        try:
            pending = self._pending_seed(trial)
            if pending == TrialState.WAITING:
                # A killed seed's retry is queued behind this trial: give way, so the next trial
                # asked for is the seed (a lone worker would otherwise wait for it for ever).
                raise optuna.TrialPruned("the seed trial is queued and runs next; gave way to it")
            if pending is not None or self.store.best(self.cfg.name) is not None:
                return False
            if trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                # Optuna records a trial before its worker finishes the lineage row (settle):
                # in between, a COMPLETE seed has no finished row yet. Finish it from the trial
                # attributes instead of training a second seed.
                reconcile(trial.study, self.store)
                if self.store.best(self.cfg.name) is not None:
                    return False
            trial.set_user_attr(ROLE_ATTR, "seed")
            return True
        finally:
            if self.admission is not None:
                self.admission.release()

    def _pending_seed(self, trial: optuna.Trial) -> TrialState | None:
        """RUNNING if another trial trains the seed, WAITING if one is queued to, else None."""
        found = None
        for t in trial.study.get_trials(
            deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)
        ):
            if t.number != trial.number and t.user_attrs.get(ROLE_ATTR) == "seed":
                if t.state == TrialState.RUNNING:
                    return t.state
                found = t.state
        return found

    def _check_constraints(self, trial: optuna.Trial, spec: Spec) -> None:
        """max_params / max_depth. The values are also Optuna constraints (<= 0 is feasible), so
        constraint-aware samplers (TPE, NSGA-II, GP) learn to avoid the infeasible region; that
        is what replaces pruning in multi-objective studies."""
        s = self.cfg.search
        values: dict[str, float] = {}
        problems = []
        if s.max_params is not None:
            values["max_params"] = spec.num_params / s.max_params - 1.0
            if spec.num_params > s.max_params:
                problems.append(
                    f"child has {spec.num_params} parameters > search.max_params {s.max_params}"
                )
        if s.max_depth is not None:
            values["max_depth"] = float(spec.depth - s.max_depth)
            if spec.depth > s.max_depth:
                problems.append(f"child depth {spec.depth} > search.max_depth {s.max_depth}")
        with warnings.catch_warnings():
            # A heartbeat retry inherits its attempt's (identical) constraint values.
            warnings.simplefilter("ignore")
            for key, value in values.items():
                trial.set_constraint(key, value)
        if problems:
            raise optuna.TrialPruned("; ".join(problems) + " (not trained)")

    def _sibling_with(
        self, parent_id: int, spec_hash: str, before: int | None
    ) -> ModelRecord | None:
        """A running or finished child of ``parent_id`` with this spec (older than model
        ``before`` when given)."""
        for m in self.store.children(parent_id):
            older = before is None or m.model_id < before
            if m.spec_hash == spec_hash and m.status in LIVE and older:
                return m
        return None

    def _refuse_concurrent_duplicate(self, child: _Child, model_id: int) -> None:
        """Two workers may propose the same child at the same moment; both rows exist now, and
        the younger one gives way (no lock needed)."""
        if child.parent is None:
            return
        twin = self._sibling_with(child.parent.model_id, child.spec.hash, before=model_id)
        if twin is not None:
            raise optuna.TrialPruned(
                f"duplicate child: model {twin.model_id} (trial {twin.trial_number}) started "
                "the same architecture from the same parent at the same time"
            )

    def _start_record(self, trial: optuna.Trial, child: _Child) -> int:
        parent, proposal = child.parent, child.proposal
        ops = [op.to_dict() for op in proposal.operations] if proposal else []
        operation = "+".join(op["name"] for op in ops) if ops else "seed"
        generation = (parent.generation + 1) if parent else 0
        info: dict[str, Any] = dict(child.info)
        info["init"] = self.cfg.search.init if parent else "scratch"
        info["worker"] = self.worker
        if proposal is not None:
            info["lr"] = proposal.lr
            info["epochs"] = proposal.epochs
        retried_model = trial.user_attrs.get("model_id")
        if retried_model is not None:
            info["retry_of_model"] = retried_model
            info["retry_of_trial"] = _retried_from(trial)
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
            generation=generation,
            info=info,
            preservation_error=child.preservation_error,
        )
        attrs: dict[str, Any] = {
            "model_id": model_id,
            "parent_model_id": parent.model_id if parent else None,
            "parent_trial": parent.trial_number if parent else None,
            "operation": operation,
            "operation_args": ops,
            "params": child.spec.num_params,
            "flops": child.spec.flops,
            "generation": generation,
            "spec_hash": child.spec.hash,
            "spec": child.spec.summary(),
            "preservation_error": _json_float(child.preservation_error),
        }
        self._write_attrs(trial, attrs)
        return model_id

    def _train_and_persist(
        self, trial: optuna.Trial, child: _Child, model_id: int, timer: PhaseTimer
    ) -> float | tuple[float, ...]:
        cfg = self.cfg
        assert child.model is not None
        seed_model = child.parent is None
        epochs = cfg.train.epochs_for_seed if seed_model else cfg.train.epochs_per_trial
        if child.proposal is not None and child.proposal.epochs is not None:
            epochs = child.proposal.epochs
        lr = child.proposal.lr if child.proposal and child.proposal.lr else None
        # Optuna cannot prune multi-objective trials; and the seed, the root of every
        # lineage, is never pruned.
        prunable = len(cfg.search.objectives) == 1 and not seed_model
        single = len(cfg.search.objectives) == 1
        epoch_db = 0.0

        def on_epoch(r: EpochResult) -> None:
            nonlocal epoch_db
            start = time.perf_counter()
            self.store.add_evaluation(
                model_id, r.epoch, r.val_accuracy, r.val_loss, r.train_loss, r.seconds
            )
            self.reporter.epoch(trial.number, r, epochs)
            if single:  # multi-objective trials cannot report intermediate values
                trial.report(r.val_accuracy, r.epoch)
            prune = prunable and trial.should_prune()
            epoch_db += time.perf_counter() - start
            if prune:
                raise optuna.TrialPruned(
                    f"pruned by {type(trial.study.pruner).__name__} at epoch {r.epoch} "
                    f"(val_accuracy {r.val_accuracy:.4f})"
                )

        try:
            with timer.phase("training"):
                optimizer = make_optimizer(child.model, self.train_cfg, lr=lr)
                if child.grow is not None and child.grow.optimizer_state:
                    load_optimizer_state_by_name(optimizer, child.model, child.grow.optimizer_state)
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
        finally:
            timer.move("training", "db", epoch_db)  # per-epoch writes are database time
        acc = float(result.final.val_accuracy)
        objectives = [acc] + [
            float(child.spec.num_params if o == "params" else child.spec.flops)
            for o in cfg.search.objectives[1:]
        ]
        with timer.phase("checkpoint_save"):
            check_finite_weights(child.model)
            opt_state = (
                optimizer_state_by_name(optimizer, child.model)
                if cfg.search.optimizer_state == "grow"
                else None
            )
            path, sha = self._save_checkpoint(
                trial,
                model_id,
                child.spec,
                {k: v.detach() for k, v in child.model.state_dict().items()},
                opt_state,
            )
        self._check_save_time(timer.seconds["checkpoint_save"])
        with timer.phase("dashboard"):
            artifact_id = self._upload(trial, path)
            self._maybe_lineage(trial.study)
        note = note_attrs(trial, trial_note(child, acc))
        timings = timer.as_dict()
        with timer.phase("db"):
            attrs = {
                "checkpoint": str(path),
                "checkpoint_artifact": artifact_id,
                "sha256": sha,
                "train_seconds": round(result.seconds, 6),
            }
            self._write_attrs(trial, {**attrs, "timings": timings}, note)
            if note is None:
                from optuna_dashboard import save_note

                save_note(trial, trial_note(child, acc))
        # The lineage row is finished only after Optuna has recorded the trial COMPLETE
        # (``settle``, called from the worker's optimize callback), so a finished row always
        # belongs to a COMPLETE trial and a parent is never a killed attempt. Everything needed
        # is in the trial's attributes, so ``reconcile`` can finish a row whose worker died in
        # between.
        self.pending[trial.number] = (
            model_id,
            {
                "val_accuracy": acc,
                "objectives": objectives,
                "checkpoint": str(path),
                "sha256": sha,
                "preservation_error": child.preservation_error,
                "train_seconds": result.seconds,
                "info": {"timings": timings},
            },
        )
        known = (self._best_seen, acc, child.parent.val_accuracy if child.parent else None)
        self._best_seen = max(v for v in known if v is not None)
        if self.reporter.shared:
            self._refresh_progress(trial.study)
        self.reporter.trial_done(trial.number, acc, self._best_seen, result)
        return acc if single else tuple(objectives)

    def _refresh_progress(self, study: optuna.Study) -> None:
        """What other workers finished while this trial trained, for its "done" line (two
        queries, made only when other workers share the study)."""
        try:
            finished = count_states(study)[TrialState.COMPLETE]
            best = self.store.best(self.cfg.name)
        except Exception:  # a progress line is not worth failing a trained model over
            return
        self.reporter.finished = finished
        if best is not None and best.val_accuracy is not None and self._best_seen is not None:
            self._best_seen = max(self._best_seen, best.val_accuracy)

    def _save_checkpoint(
        self,
        trial: optuna.Trial,
        model_id: int,
        spec: Spec,
        state_dict: dict[str, torch.Tensor],
        opt_state: dict[str, dict[str, torch.Tensor]] | None,
    ) -> tuple[Path, str]:
        """Write the model's checkpoint; returns its path and sha256. Model ids are unique in
        one database only: a file of the same name from another database sharing this folder
        (or from a deleted one) is never replaced, the new file gets a suffix instead."""
        name = f"model-{model_id:06d}"
        path = self.checkpoint_root / f"{name}.safetensors"
        meta = {"study": self.cfg.name, "model_id": model_id, "trial": trial.number}

        def save(to: Path) -> str:
            return save_checkpoint(
                to, spec, state_dict, optimizer_state=opt_state, metadata=meta, exclusive=True
            )

        try:
            try:
                return path, save(path)
            except FileExistsError:
                taken = path.name
                path = self.checkpoint_root / f"{name}-{secrets.token_hex(4)}.safetensors"
                self.reporter.line(
                    f"[trial {trial.number}] note: {taken} already exists (another database "
                    f"uses this checkpoint folder?); kept it and saved as {path.name}"
                )
                return path, save(path)
        except OSError as e:  # a full disk: the atomic write left no partial file
            raise checkpoint_write_error(path, e) from e

    def _write_attrs(
        self, trial: optuna.Trial, user: dict[str, Any], system: dict[str, Any] | None = None
    ) -> None:
        """``write_attrs`` uses Optuna's tables directly, past the protected storage: retried
        here (an upsert, so repeating it is harmless)."""
        if self.db is None:
            write_attrs(trial, user, system)
        else:
            self.db.call(write_attrs, trial, user, system, what="optuna trial attributes")

    def _upload(self, trial: optuna.Trial, path: Path) -> str | None:
        if self.artifact_store is None:
            return None
        try:
            return upload_checkpoint(trial, self.artifact_store, path)
        except Exception as e:  # reported; the trial keeps its result and its checkpoint
            self.reporter.line(f"[trial {trial.number}] note: checkpoint artifact not saved: {e}")
            return None

    def _maybe_lineage(self, study: optuna.Study) -> None:
        try:
            self.lineage.maybe_publish(study)
        except Exception as e:  # a figure is not worth failing a trained model over
            self.reporter.line(f"note: could not save the lineage figure: {e}")

    def _check_save_time(self, seconds: float) -> None:
        """Writing a checkpoint holds the GIL, so no heartbeat is sent meanwhile; warn before a
        slower write lets other workers declare this live trial dead."""
        window = checkpoint_window(self.cfg.workers)
        if seconds > window / 2 and not self._slow_save_said:
            self._slow_save_said = True
            self.reporter.line(
                f"warning: writing a checkpoint took {seconds:.1f}s, more than half of the "
                f"{window:.0f}s a worker may stay silent (workers.grace_period - "
                "workers.heartbeat_interval); raise workers.grace_period to at least "
                f"{math.ceil(2 * seconds + self.cfg.workers.heartbeat_interval)}"
            )

    def _probe_batch(self) -> torch.Tensor:
        if self._probe is None:
            self._probe = self.data.probe(self.cfg.search.probe_size)
        return self._probe


def _retried_from(trial: optuna.Trial) -> int | None:
    """The number of the first attempt when this trial is a heartbeat retry, else None. Only
    enqueued trials (the seed, retries) start with user attributes, so others skip the read."""
    if not trial.user_attrs:
        return None
    system = trial.storage.get_trial_system_attrs(trial._trial_id)
    origin = system.get("failed_trial")  # set by RetryHeartbeatStaleTrialCallback
    return None if origin is None else int(origin)


def _op_label(proposal: Proposal | None) -> str:
    if proposal is None:
        return "seed"
    parts = []
    for op in proposal.operations:
        args = ", ".join(f"{k}={v}" for k, v in op.args.items())
        parts.append(f"{op.name}({op.target}{', ' + args if args else ''})")
    extra = [f"lr={proposal.lr:.3g}"] if proposal.lr else []
    extra += [f"epochs={proposal.epochs}"] if proposal.epochs else []
    return " + ".join(parts) + (f" [{', '.join(extra)}]" if extra else "")


def _json_float(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)


def _safe(name: str) -> str:
    """A study name as one folder name: never a path, never '.' or '..' (a leading dot is '_')."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return "_" + safe[1:] if safe.startswith(".") else safe
