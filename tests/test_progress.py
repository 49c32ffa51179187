"""Following a run: plain lines when output is not a terminal (logs, CI), a tqdm epoch bar on a
terminal. Checked on the Reporter alone and through ``growsearch run`` (captured output and a
real pseudo-terminal)."""

from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import sys
import termios
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from growsearch.cli import main
from growsearch.search._progress import Reporter
from growsearch.spec import Spec
from tests._studyfiles import StudyFiles, write_study

SPEC = Spec.from_dict(
    {"input_shape": [4], "layers": [{"type": "dense", "out": 8, "activation": "relu"},
                                    {"type": "dense", "out": 3}]}
)  # fmt: skip
# What a terminal progress bar is made of: carriage returns, ANSI escapes, block characters and
# tqdm's "NN%|" meter.
BAR_MARKS = re.compile(r"[\r\x1b\u2580-\u259f]|\d+%\|")
EPOCH_LINE = re.compile(
    r"^\[trial (\d+)\]   epoch (\d+)/(\d+) loss \d+\.\d{4} val_loss \d+\.\d{4} "
    r"val_acc \d\.\d{4} \(\d+\.\d\ds\)$",
    re.M,
)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _epoch(n: int, acc: float) -> SimpleNamespace:
    return SimpleNamespace(epoch=n, train_loss=0.5, val_loss=0.4, val_accuracy=acc, seconds=0.01)


def _one_trial(reporter: Reporter, epochs: int = 3) -> None:
    reporter.trial_start(0, None, "seed", SPEC)
    for e in range(1, epochs + 1):
        reporter.epoch(0, _epoch(e, 0.5 + 0.1 * e), epochs)
    reporter.trial_done(0, 0.8, 0.8, SimpleNamespace(samples_per_second=1234.0))


def test_plain_lines_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    reporter = Reporter(5, stream=stream)
    assert reporter.bars is False  # StringIO.isatty() is False
    _one_trial(reporter)
    text = stream.getvalue()
    assert not BAR_MARKS.search(text)
    lines = text.splitlines()
    assert lines[0] == f"[trial 0] seed (from scratch) | {SPEC.summary()} | params 67"
    assert [EPOCH_LINE.match(line).groups() for line in lines[1:4]] == [  # type: ignore[union-attr]
        ("0", "1", "3"),
        ("0", "2", "3"),
        ("0", "3", "3"),
    ]
    assert lines[4].startswith("[trial 0] done: val_acc 0.8000 (best 0.8000) in ")
    assert lines[4].endswith(", 1,234 samples/s") and len(lines) == 5


def test_a_bar_on_a_terminal_and_lines_above_it() -> None:
    stream = FakeTerminal()
    reporter = Reporter(5, stream=stream)
    assert reporter.bars is True
    _one_trial(reporter)
    text = stream.getvalue()
    assert "\r" in text and re.search(r"trial 0: +\d+%\|", text)
    assert "3/3" in text and "val_acc 0.8000" in text
    assert "epoch 1/3 loss" not in text  # the bar replaces the per-epoch lines
    # Whole lines still come through, and the bar is gone after the trial (leave=False).
    assert "[trial 0] seed (from scratch)" in text and "[trial 0] done: val_acc 0.8000" in text
    assert reporter._bar is None


def test_quiet_prints_nothing() -> None:
    for stream in (io.StringIO(), FakeTerminal()):
        _one_trial(Reporter(5, stream=stream, quiet=True))
        assert stream.getvalue() == ""


def test_one_worker_counts_its_own_trials_without_querying() -> None:
    stream = io.StringIO()
    reporter = Reporter(5, stream=stream)
    reporter.study_progress(0)
    _one_trial(reporter)
    reporter.study_progress(1)  # the worker's next count confirms its own trial
    assert reporter.shared is False
    assert stream.getvalue().splitlines()[-1].endswith("; 1/5 finished")


@pytest.mark.parametrize(
    "counts",
    [[(2, 1)], [(0, 0), (3, 0)]],
    ids=["others-running", "count-jumped"],
)
def test_other_workers_mark_the_progress_shared(counts: list[tuple[int, int]]) -> None:
    """Another worker's running trial, or more finished trials than this worker finished, means
    the study is shared: the runner then refreshes the count before each "done" line."""
    reporter = Reporter(5, stream=io.StringIO())
    for finished, running in counts:
        reporter.study_progress(finished, running)
    assert reporter.shared is True


def test_a_shared_study_reports_the_refreshed_count_and_best() -> None:
    """What `TrialRunner._refresh_progress` hands the reporter: the COMPLETE count from the
    database (other workers finished 2 while this trial trained) and the store's best."""
    import optuna

    from growsearch.search._objective import TrialRunner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.9, 0.7):
        study.add_trial(optuna.trial.create_trial(value=value))
    stream = io.StringIO()
    reporter = Reporter(5, stream=stream)
    reporter.study_progress(1, 1)  # one finished and one running when this trial began
    runner = SimpleNamespace(
        reporter=reporter,
        cfg=SimpleNamespace(name="s"),
        store=SimpleNamespace(best=lambda name: SimpleNamespace(val_accuracy=0.93)),
        _best_seen=0.8,
    )
    TrialRunner._refresh_progress(runner, study)  # type: ignore[arg-type]
    assert reporter.finished == 3 and runner._best_seen == 0.93
    reporter.trial_start(7, None, "seed", SPEC)
    reporter.trial_done(7, 0.85, runner._best_seen, SimpleNamespace(samples_per_second=10.0))
    done = stream.getvalue().splitlines()[-1]
    assert "(best 0.9300)" in done and done.endswith("; 4/5 finished")


# ---- through the CLI ----------------------------------------------------------------------


def _digits_study(folder: Path) -> StudyFiles:
    model = {
        "input_shape": [1, 8, 8],
        "layers": [
            {"type": "flatten"},
            {"type": "dense", "out": 16, "activation": "relu"},
            {"type": "dense", "out": 10},
        ],
    }
    return write_study(
        folder, "progress", {"dataset": "digits"}, model, n_trials=2, train={"seed_epochs": 2}
    )


def test_a_run_into_a_pipe_prints_plain_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _digits_study(tmp_path)
    assert main(files.run_args()) == 0
    out = capsys.readouterr().out
    assert not BAR_MARKS.search(out), repr(out)
    lines = out.splitlines()
    assert lines[0].startswith("growsearch: study 'progress' in sqlite:///")
    assert "[trial 0] seed (from scratch) | flatten -> dense16 -> dense10" in out
    epochs = [m.groups() for m in map(EPOCH_LINE.match, lines) if m]
    assert epochs == [("0", "1", "2"), ("0", "2", "2"), ("1", "1", "1")]
    assert re.search(
        r"^\[trial 1\] parent model 1 \(trial 0, acc \d\.\d{4}\) -> (widen|deepen)", out, re.M
    )
    assert sum(line.startswith("[trial ") and " done: " in line for line in lines) == 2
    assert "growsearch: stopped: 2 trials finished (n_trials = 2)" in out


def _pty_pair() -> tuple[int, int]:
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # no "\n" -> "\r\n": a "\r" in the output is then tqdm's
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    return master, slave


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal (POSIX)")
def test_a_run_on_a_terminal_shows_the_epoch_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _digits_study(tmp_path)
    master, slave = _pty_pair()
    chunks: list[bytes] = []

    def drain() -> None:  # the terminal's reader; without one a full buffer blocks the writer
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal side was closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    terminal = open(slave, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    try:
        assert terminal.isatty()
        monkeypatch.setattr(sys, "stdout", terminal)
        rc = main(files.run_args())
        terminal.flush()
    finally:
        monkeypatch.undo()
        terminal.close()
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    assert rc == 0
    out = b"".join(chunks).decode("utf-8")
    assert "\r" in out
    assert re.search(r"trial 0: +\d+%\|", out) and re.search(r"trial 1: +\d+%\|", out)
    assert "2/2" in out and "1/1" in out  # the seed's two epochs, the child's one
    # The study's bar above the epoch bar: finished trials out of n_trials, full at the end.
    assert re.search(r"trials: +0%\|[^\r\n]*0/2", out)
    assert re.search(r"trials: +100%\|[^\r\n]*2/2", out)
    assert not EPOCH_LINE.search(out.replace("\r", "\n"))  # no per-epoch lines under a bar
    assert "[trial 0] seed (from scratch)" in out and "[trial 1] done: val_acc" in out
    assert "growsearch: stopped: 2 trials finished (n_trials = 2)" in out
