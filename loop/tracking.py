"""Experiment tracking: one W&B run per arm and seed, with every metric also appended to a local metrics.jsonl.

metrics.jsonl (in the run's ``out_dir``) is the ground truth the compare report reads; W&B is a view of it. Each call
appends one row, ``{"kind": "rl" | "eval", "round": r, "rl_step": s, **metrics}``, with the metric names as given (no
prefix). A NaN or infinite value is written as ``null`` (strict JSON has no NaN); W&B gets the float itself.
Completion samples go to ``completions_round{r}.jsonl`` beside it, never into metrics.jsonl.

W&B side: RL metrics are logged as ``train/<name>`` against ``rl_step``, evaluations as ``eval/<name>`` against
``round``, completion tables as ``samples/completions`` against ``round``. W&B files go under ``out_dir/wandb``.
The mode is ``offline`` by default (no network; sync later with ``wandb_sync_hint``); a WANDB_MODE (or
WANDB_DISABLED=true) set by the user in the environment wins over the argument. If wandb cannot be imported or started,
or a log call fails, one warning is logged and the run goes on with metrics.jsonl alone.

Resume (a ``run_id`` whose earlier processes left W&B files in ``out_dir/wandb``): the W&B run gets each metric at each
(round, rl_step), and each round's completion table, exactly once over all its processes. A killed process's W&B file
lacks what wandb had not yet flushed (wandb-core writes its ``run-<id>.wandb`` in 32 KiB blocks and drops the unwritten
tail when its parent dies), while the stage the kill interrupted runs again and logs its rows a second time. So on start
the Tracker reads the history rows out of the earlier ``run-<id>.wandb`` files (``logged_metrics``), sends W&B the
metrics.jsonl rows and completion tables it lacks (a value metrics.jsonl holds as null goes as null), and from then on
skips any metric W&B already holds at that (round, rl_step): W&B keeps the value it got first (a killed process's, for a
redone step it had flushed), metrics.jsonl the one of the stage that committed. metrics.jsonl itself is never filtered:
every call appends its row. Keep ``out_dir/wandb`` until the run is done: rows of a removed file count as never sent. In
online mode the same local files stand in for what the server got (exact only for offline runs). If an earlier file
cannot be read, one warning is logged and nothing is skipped or re-sent.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prmloop.data.errors import UserError
from prmloop.data.jsonl import append_jsonl, read_jsonl_tolerant, truncate_torn_tail, write_jsonl
from prmloop.loop.wandb_files import MetricKey, logged_metrics

logger = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
"""Modes a config may ask for; the environment's WANDB_MODE may name any mode wandb itself accepts."""

RESERVED_KEYS = ("kind", "round", "rl_step")
"""Columns every metrics.jsonl row carries; a metric may not reuse these names."""

COMPLETION_COLUMNS = ("prompt", "completion", "reward", "correct")
"""Columns of the completions table, in order; extra keys in the rows follow, sorted."""

PREFIXES = {"rl": "train", "eval": "eval"}
"""W&B key prefix of each metrics.jsonl row kind."""

TABLE_KEY = "samples/completions"
"""W&B key of a round's completions table."""


def resolve_mode(mode: str, environ: Mapping[str, str]) -> str:
    """The W&B mode to use: the user's WANDB_MODE if set, "disabled" if WANDB_DISABLED is true, else ``mode``."""
    if mode not in MODES:
        raise UserError(f"tracking mode: {mode!r} is not one of {list(MODES)}")
    env_mode = environ.get("WANDB_MODE", "").strip()
    if env_mode:
        return env_mode
    if environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "disabled"
    return mode


def to_number(key: str, value: Any) -> Any:
    """A plain Python value for logging: 0-d tensors and numpy scalars become numbers; other objects are a TypeError."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"metric {key!r}: cannot log a {type(value).__name__}; pass a number or a string")


def json_safe(value: Any) -> Any:
    """``value`` with NaN and +-inf replaced by None, so json.dumps writes strict JSON (``null``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_row(kind: str, metrics: Mapping[str, Any], rl_step: int, round: int) -> dict[str, Any]:
    """The metrics.jsonl row for one log call: reserved columns first, then the metrics, non-finite floats as None."""
    clash = [key for key in metrics if key in RESERVED_KEYS]
    if clash:
        raise ValueError(f"metric names {clash} clash with the reserved columns {list(RESERVED_KEYS)}")
    row: dict[str, Any] = {"kind": kind, "round": int(round), "rl_step": int(rl_step)}
    row.update({key: json_safe(to_number(key, value)) for key, value in metrics.items()})
    return row


def wandb_sync_hint(out_dir: str | Path) -> str:
    """The shell command that uploads every offline W&B run under ``out_dir`` (searched recursively)."""
    out_dir = Path(out_dir)
    runs = sorted(str(path) for path in out_dir.rglob("offline-run-*") if path.is_dir())
    if runs:
        return "wandb sync " + " ".join(shlex.quote(run) for run in runs)
    return f"wandb sync {shlex.quote(str(out_dir / 'wandb'))}/offline-run-*"


class Tracker:
    """One arm-and-seed run: appends metrics to ``out_dir/metrics.jsonl`` and mirrors them to a W&B run.

    ``run_id`` makes a resumed run continue the same W&B run (``resume="allow"``) without repeating or losing a metric
    (see the module docstring); keep ``tracker.run_id`` with the checkpoint. A torn last line left in metrics.jsonl by
    a crash is cut off before anything is appended. Rows logged after the last checkpoint of a crashed run are not
    removed (the loop's ledger cuts them), so readers keep the last row per (kind, round, rl_step).
    """

    def __init__(self, out_dir: str | Path, project: str, group: str, name: str, job_type: str, tags: list[str],
                 config: dict[str, Any], mode: str = "offline", run_id: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        truncate_torn_tail(self.metrics_path)
        self.mode = resolve_mode(mode, os.environ)
        self.run_id = run_id
        self._run: Any = None
        self._wandb: Any = None
        self._held: set[MetricKey] = set()  # every metric the W&B run holds, so none is sent twice
        if self.mode != "disabled":
            self._start_wandb(project=project, group=group, name=name, job_type=job_type, tags=list(tags),
                              config=dict(config))

    @property
    def wandb_active(self) -> bool:
        """Whether metrics are also going to a W&B run (False when disabled or after a W&B failure)."""
        return self._run is not None

    def _start_wandb(self, **init_args: Any) -> None:
        try:
            import wandb

            earlier = self._earlier_metrics()  # read before init, so the new process's own file is not among them
            settings = wandb.Settings(mode=self.mode, console="off", quiet=True, save_code=False)
            run = wandb.init(dir=str(self.out_dir), id=self.run_id, resume="allow" if self.run_id else None,
                             settings=settings, reinit="create_new", **init_args)
            run.define_metric("rl_step")
            run.define_metric("round")
            run.define_metric("train/*", step_metric="rl_step")
            run.define_metric("eval/*", step_metric="round")
            run.define_metric("samples/*", step_metric="round")
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn("start", err)
            return
        self._wandb, self._run, self.run_id = wandb, run, run.id
        if earlier is not None:
            self._held = earlier
            try:
                self._send_missing()
            except Exception as err:  # noqa: BLE001 - tracking must never stop training
                self._warn("catch-up", err)

    def _earlier_metrics(self) -> set[MetricKey] | None:
        """What earlier processes of this run wrote to W&B, or None: no run id, or a file that cannot be read."""
        if self.run_id is None:
            return None
        held = set()
        for path in sorted((self.out_dir / "wandb").glob(f"*/run-{self.run_id}.wandb")):
            if path.parent.is_symlink():  # wandb's latest-run link: the same run twice
                continue
            try:
                held |= logged_metrics(path)
            except Exception as err:  # noqa: BLE001 - tracking must never stop training
                logger.warning("W&B read-back of %s failed (%s: %s); resumed rows may be repeated in W&B", path,
                               type(err).__name__, (str(err).splitlines() or [""])[0][:200])
                return None
        return held

    def _send_missing(self) -> None:
        """Send W&B the metrics.jsonl rows and completion tables it lacks (lost when an earlier process was killed)."""
        if self.metrics_path.exists():
            for row in read_jsonl_tolerant(self.metrics_path):
                metrics = {key: value for key, value in row.items() if key not in RESERVED_KEYS}
                self._send(PREFIXES[row["kind"]], metrics, row["rl_step"], row["round"])
        for path in sorted(self.out_dir.glob("completions_round*.jsonl")):
            rows = read_jsonl_tolerant(path)
            columns = list(rows[0]) if rows else list(COMPLETION_COLUMNS)
            self._log_table(columns, [[row.get(key) for key in columns] for row in rows],
                            int(path.stem.removeprefix("completions_round")))

    def _warn(self, action: str, err: BaseException) -> None:
        first_line = (str(err).splitlines() or [""])[0][:200]
        logger.warning("W&B %s failed (%s: %s); metrics still go to %s", action, type(err).__name__, first_line,
                       self.metrics_path)

    def _wandb_log(self, data: dict[str, Any], round: int, rl_step: int | None = None) -> None:
        """Log the entries of ``data`` the W&B run does not hold yet at (round, rl_step), if any."""
        if self._run is None:
            return
        new = {key: value for key, value in data.items() if (round, rl_step, key) not in self._held}
        if not new:
            return
        steps = {"round": round} if rl_step is None else {"rl_step": rl_step, "round": round}
        try:
            self._run.log({**new, **steps})
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn("log", err)
            self._run = None
            return
        self._held.update((round, rl_step, key) for key in new)

    def _send(self, prefix: str, metrics: Mapping[str, Any], rl_step: int, round: int) -> None:
        data = {f"{prefix}/{key}": to_number(key, value) for key, value in metrics.items()}
        self._wandb_log(data, int(round), int(rl_step))

    def _log_table(self, columns: list[str], data: list[list[Any]], round: int) -> None:
        if self._run is None or (round, None, TABLE_KEY) in self._held:
            return
        try:
            table = self._wandb.Table(columns=columns, data=data)
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn("table", err)
            return
        self._wandb_log({TABLE_KEY: table}, round)

    def _log(self, kind: str, metrics: Mapping[str, Any], rl_step: int, round: int) -> None:
        append_jsonl(self.metrics_path, [metrics_row(kind, metrics, rl_step, round)])
        self._send(PREFIXES[kind], metrics, rl_step, round)

    def log_rl(self, metrics: Mapping[str, Any], rl_step: int, round: int) -> None:
        """Log one RL step's metrics (e.g. reward, kl) as ``train/*`` at ``rl_step``."""
        self._log("rl", metrics, rl_step, round)

    def log_eval(self, metrics: Mapping[str, Any], rl_step: int, round: int) -> None:
        """Log one evaluation (e.g. accuracy, prm_first_error_f1) as ``eval/*`` at ``round``."""
        self._log("eval", metrics, rl_step, round)

    def log_completions(self, rows: list[dict[str, Any]], round: int) -> Path:
        """Write sampled completions to ``completions_round{round}.jsonl`` and log them as a W&B table.

        Each row has prompt, completion, reward, correct (missing ones are None) and may carry extra keys.
        """
        extra = sorted({key for row in rows for key in row} - set(COMPLETION_COLUMNS))
        columns = [*COMPLETION_COLUMNS, *extra]
        clean = [{key: to_number(key, row.get(key)) for key in columns} for row in rows]
        path = self.out_dir / f"completions_round{int(round)}.jsonl"
        write_jsonl(path, ({key: json_safe(value) for key, value in row.items()} for row in clean))
        self._log_table(columns, [[row[key] for key in columns] for row in clean], int(round))
        return path

    def finish(self, exit_code: int | None = None) -> None:
        """Close the W&B run (safe to call twice); metrics.jsonl needs no closing (each append is fsynced)."""
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.finish(exit_code=exit_code)
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn("finish", err)

    def __enter__(self):  # returns self (typing.Self needs Python 3.11)
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self.finish(exit_code=1 if exc_type is not None else None)
