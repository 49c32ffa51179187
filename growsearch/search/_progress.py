"""Progress output: one line per event, readable in a terminal, a log file or CI.

On a terminal two tqdm bars sit under the lines: finished trials out of ``n_trials`` and the
running trial's epochs; elsewhere only plain lines are written (each "done" line says how many
trials have finished), so logs stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from growsearch.spec import Spec

__all__ = ["Reporter"]


class Reporter:
    def __init__(
        self,
        n_trials: int,
        stream: IO[str] | None = None,
        prefix: str = "",
        quiet: bool = False,
        bars: bool | None = None,
    ) -> None:
        self.n_trials = n_trials
        self.stream = stream or sys.stdout
        self.prefix = prefix
        self.quiet = quiet
        self.bars = self.stream.isatty() if bars is None else bars
        self._bar: Any = None
        self._trials_bar: Any = None
        self._t0: dict[int, float] = {}
        self.finished: int | None = None  # COMPLETE trials of the study, as the worker last saw
        # Other workers share the study: counts and the best accuracy seen at a trial's start
        # are stale by its end, so the trial refreshes them before its "done" line.
        self.shared = False

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar is not None or self._trials_bar is not None:
            from tqdm import tqdm

            tqdm.write(f"{self.prefix}{text}", file=self.stream)
        else:
            print(f"{self.prefix}{text}", file=self.stream, flush=True)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def study_progress(self, finished: int, running: int = 0) -> None:
        """The worker counted ``finished`` COMPLETE trials (all workers together) and
        ``running`` trials of other workers."""
        if running > 0 or (self.finished is not None and finished > self.finished):
            self.shared = True  # more than this worker's own trials moved the counts
        self.finished = finished
        if not (self.bars and not self.quiet):
            return
        if self._trials_bar is None:
            from tqdm import tqdm

            self._trials_bar = tqdm(
                total=self.n_trials,
                initial=finished,
                desc="trials",
                unit="trial",
                position=0,
                leave=True,
                file=self.stream,
            )
        else:
            self._trials_bar.n = finished
            self._trials_bar.refresh()

    def close(self) -> None:
        self._close_bar()
        if self._trials_bar is not None:
            self._trials_bar.close()
            self._trials_bar = None

    def trial_start(self, number: int, parent: Any, op: str, spec: Spec) -> None:
        self._t0[number] = time.perf_counter()
        if parent is None:
            head = "seed (from scratch)"
        else:
            head = (
                f"parent model {parent.model_id} (trial {parent.trial_number}, acc "
                f"{parent.val_accuracy:.4f}) -> {op}"
            )
        self.line(f"[trial {number}] {head} | {spec.summary()} | params {spec.num_params:,}")

    def epoch(self, number: int, r: Any, epochs: int) -> None:
        if self.bars and not self.quiet:
            if self._bar is None:
                from tqdm import tqdm

                # Made after the first epoch, so tqdm's own rate would be wrong: show the
                # epoch's measured seconds instead.
                self._bar = tqdm(
                    total=epochs,
                    desc=f"trial {number}",
                    leave=False,
                    file=self.stream,
                    position=1 if self._trials_bar is not None else 0,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} epochs"
                    "{postfix}",
                )
            self._bar.update(1)
            self._bar.set_postfix_str(f"val_acc {r.val_accuracy:.4f}, {r.seconds:.2f}s/epoch")
        else:
            self.line(
                f"[trial {number}]   epoch {r.epoch}/{epochs} loss {r.train_loss:.4f} "
                f"val_loss {r.val_loss:.4f} val_acc {r.val_accuracy:.4f} ({r.seconds:.2f}s)"
            )

    def trial_done(self, number: int, acc: float, best: float, result: Any) -> None:
        self._close_bar()
        took = time.perf_counter() - self._t0.pop(number, time.perf_counter())
        if self.finished is not None:
            self.finished += 1  # the worker's next count confirms it
        count = "" if self.finished is None else f"; {self.finished}/{self.n_trials} finished"
        self.line(
            f"[trial {number}] done: val_acc {acc:.4f} (best {best:.4f}) in {took:.1f}s, "
            f"{result.samples_per_second:,.0f} samples/s{count}"
        )
        if self._trials_bar is not None and self.finished is not None:
            self._trials_bar.n = self.finished
            self._trials_bar.refresh()

    def trial_pruned(self, number: int, reason: str) -> None:
        self._close_bar()
        self.line(f"[trial {number}] pruned: {reason}")

    def trial_failed(self, number: int, reason: str, expected: bool) -> None:
        self._close_bar()
        first = reason if expected else reason.splitlines()[-1]
        self.line(f"[trial {number}] FAILED: {first}")
        if not expected:
            print(reason, file=sys.stderr, flush=True)
