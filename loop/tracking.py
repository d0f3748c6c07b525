"""Experiment tracking: a W&B run per command (loop arm and seed, grpo, prm train) and the loop's local metrics.jsonl.

metrics.jsonl (in the loop run's ``out_dir``) is the ground truth the compare report reads; W&B is a view of it. Each
call appends one row, ``{"kind": "rl" | "eval", "round": r, "rl_step": s, **metrics}``, with the metric names as given
(no prefix). A NaN or infinite value is written as ``null`` (strict JSON has no NaN); W&B gets the float itself.
Completion samples go to ``completions_round{r}.jsonl`` beside it, never into metrics.jsonl.

W&B keys and their x axes (``AXES``): RL steps ``train/<name>`` against ``rl_step``, evaluations ``eval/<name>`` against
``round``, completion tables ``samples/completions`` against ``round``, reward-model epochs ``prm/<name>`` against
``epoch``, test-time search ``search/<strategy>`` against ``n`` (samples per problem). W&B files go under ``out_dir/wandb``. ``tracking.mode`` is ``offline`` by default (no network; upload later
with ``wandb_sync_hint``); a WANDB_MODE (or WANDB_DISABLED=true) set by the user in the environment wins over it. An
unknown mode, or ``online`` without W&B credentials, is a UserError naming ``tracking.mode``. If wandb cannot be
imported or started, or a log call fails, one warning is logged and the run goes on without W&B.

Resume uses only wandb's public API: ``wandb.init(id=run_id, resume="allow")`` continues the run, and every log call
passes an explicit ``step=`` that keeps growing across processes. What was handed to W&B is our own record,
``out_dir/wandb_logged.jsonl``: one fsynced line per log call, ``{"run_id", "step", "at": {axis: value}, "keys"}``,
written just BEFORE the call. A new process of the same run id reads it, starts its steps after the largest one, and
skips every key already recorded at the same ``at`` (a stage that runs again after a kill logs nothing twice). So W&B
gets each key at each (round, rl_step) or epoch at most once, in step order. The price of a public mechanism: wandb
drops what it had not yet written when its process is killed (offline: up to the last 32 KiB of the run file), and
those rows stay missing from W&B; metrics.jsonl and the jobs' own metric files keep them. At start, rows of
metrics.jsonl (and completion tables) the record lacks, e.g. from a process that ran with W&B off, are sent once.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..utils.errors import UserError
from ..utils.jsonl import append_jsonl, read_jsonl_tolerant, truncate_torn_tail, write_jsonl

logger = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
"""Modes a config may ask for; the environment's WANDB_MODE may name any mode wandb itself accepts."""

RESERVED_KEYS = ("kind", "round", "rl_step")
"""Columns every metrics.jsonl row carries; a metric may not reuse these names."""

COMPLETION_COLUMNS = ("prompt", "completion", "reward", "correct")
"""Columns of the completions table, in order; extra keys in the rows follow, sorted."""

PREFIXES = {"rl": "train", "eval": "eval"}
"""W&B key prefix of each metrics.jsonl row kind."""

QUESTIONS = {
    "q1_process_vs_outcome": ("accuracy", "trace_accuracy"),
    "q2_iterative_vs_fixed": ("prm_first_error_f1", "band_prm_first_error_f1"),
    "q3_reward_hacking": ("prm_score_mean", "sample_trace_accuracy", "reward_hacking_gap_trace"),
    "q4_compute": ("tokens_total", "tokens_reward_model"),
}
"""The study's questions, each a W&B section of its own: an evaluation row's listed metrics are also logged as
``<question>/<name>`` against ``rl_step``, so a W&B workspace grouped by the experiment shows every arm side by side,
one panel per metric, one section per question (the same numbers as ``eval/<name>``)."""

AXES = {"train/*": "rl_step", "eval/*": "round", "samples/*": "round", "prm/*": "epoch", "search/*": "n",
        **{f"{question}/*": "rl_step" for question in QUESTIONS}}
"""W&B key pattern -> the logged column it is plotted against."""

TABLE_KEY = "samples/completions"
"""W&B key of a round's completions table."""

RECORD_FILE = "wandb_logged.jsonl"
"""Our record of every W&B log call of the runs kept in a folder (see the module docstring)."""

RUN_ID_FILE = "wandb_run_id.txt"
"""Where a grpo or prm train output folder keeps its W&B run id (the loop keeps it in its ledger)."""


def resolve_mode(mode: str, environ: Mapping[str, str]) -> str:
    """The W&B mode to use: the user's WANDB_MODE if set, "disabled" if WANDB_DISABLED is true, else ``mode``."""
    if mode not in MODES:
        raise UserError(f"tracking.mode: {mode!r} is not one of {', '.join(MODES)}")
    env_mode = environ.get("WANDB_MODE", "").strip()
    if env_mode:
        return env_mode
    if environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "disabled"
    return mode


def check_online_login(mode: str) -> None:
    """A UserError naming tracking.mode when ``mode`` is online and wandb finds no credentials (no network used)."""
    if mode != "online":
        return
    try:
        import wandb  # lazy: optional and slow; only an online run checks its login
    except ImportError:
        return  # the start warns and the run goes on without W&B
    if wandb.run is None and not wandb.login(verify=False, prompt=False):
        raise UserError("tracking.mode: 'online' needs W&B credentials (run `wandb login` or set WANDB_API_KEY), or "
                        "set tracking.mode=offline and `wandb sync` later")


def is_main_process(environ: Mapping[str, str]) -> bool:
    """Whether this process logs to W&B: RANK (set by accelerate launch and torchrun) is unset or 0."""
    return environ.get("RANK", "0").strip() in ("", "0")


def to_number(key: str, value: Any) -> Any:
    """A plain Python value for logging: 0-d tensors and numpy scalars become numbers; other objects are a TypeError."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"metric {key!r}: cannot log a {type(value).__name__}; pass a number or a string")


def prefixed(prefix: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``{prefix/name: value}`` with values made plain (``to_number``)."""
    return {f"{prefix}/{key}": to_number(key, value) for key, value in metrics.items()}


def question_panels(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The ``QUESTIONS`` copies of an evaluation row's metrics: ``{question/name: value}`` for the names it holds."""
    return {f"{question}/{key}": to_number(key, metrics[key])
            for question, keys in QUESTIONS.items() for key in keys if key in metrics}


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


def job_run_id(out_dir: str | Path, command: str, resume: bool) -> str:
    """The W&B run id of a job's output folder: the stored one when resuming, else a new one, stored before use."""
    path = Path(out_dir) / RUN_ID_FILE
    if resume and path.is_file() and path.read_text(encoding="utf-8").strip():
        return path.read_text(encoding="utf-8").strip()
    run_id = f"{command.replace(' ', '-')}-{secrets.token_hex(4)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n", encoding="utf-8")
    return run_id


def _at_key(at: Mapping[str, Any]) -> tuple:
    return tuple(sorted(at.items()))


class WandbRun:
    """One W&B run that logs each key at each position (``at``: e.g. round and rl_step) at most once over all the
    processes of ``run_id``, from its record in ``out_dir`` (see the module docstring). ``mode`` is already resolved
    (``resolve_mode``); "disabled" starts nothing and writes nothing."""

    def __init__(self, out_dir: str | Path, project: str, group: str, name: str, job_type: str, tags: list[str],
                 config: dict[str, Any], mode: str, run_id: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.record_path = self.out_dir / RECORD_FILE
        self.mode = mode
        self.run_id = run_id
        self.held: set[tuple[tuple, str]] = set()
        """(sorted ``at`` items, W&B key) of everything this run id has handed to W&B, all processes."""
        self.next_step = 0
        self._run: Any = None
        self._wandb: Any = None
        if mode != "disabled":
            self._start(project=project, group=group, name=name, job_type=job_type, tags=list(tags),
                        config=dict(config))

    @property
    def active(self) -> bool:
        """Whether log calls reach a W&B run (False when disabled or after a W&B failure)."""
        return self._run is not None

    def _start(self, **init_args: Any) -> None:
        check_online_login(self.mode)
        try:
            import wandb  # lazy: optional and slow; loaded when a run starts

            self.out_dir.mkdir(parents=True, exist_ok=True)
            settings = wandb.Settings(mode=self.mode, console="off", quiet=True, save_code=False)
            run = wandb.init(dir=str(self.out_dir), id=self.run_id, resume="allow" if self.run_id else None,
                             settings=settings, reinit="create_new", **init_args)
            for axis in sorted(set(AXES.values())):
                run.define_metric(axis)
            for pattern, axis in AXES.items():
                run.define_metric(pattern, step_metric=axis)
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn("start", err)
            return
        self._wandb, self._run, self.run_id = wandb, run, run.id
        self._read_record()

    def _read_record(self) -> None:
        """What earlier processes of this run id handed to W&B, and the step after theirs."""
        if not self.record_path.exists():
            return
        truncate_torn_tail(self.record_path)
        for line in read_jsonl_tolerant(self.record_path):
            if line.get("run_id") != self.run_id:
                continue
            at = _at_key(line["at"])
            self.held.update((at, key) for key in line["keys"])
            self.next_step = max(self.next_step, int(line["step"]) + 1)

    def _warn(self, action: str, err: BaseException) -> None:
        first_line = (str(err).splitlines() or [""])[0][:200]
        logger.warning("W&B %s failed (%s: %s); the run goes on, its metrics only in its local files (metrics.jsonl)",
                       action, type(err).__name__, first_line)

    def holds(self, at: Mapping[str, Any], key: str) -> bool:
        """Whether ``key`` was already handed to W&B at ``at`` by some process of this run."""
        return (_at_key(at), key) in self.held

    def log(self, data: Mapping[str, Any], at: Mapping[str, int]) -> None:
        """Log the entries of ``data`` not yet held at ``at`` as one W&B step, with ``at``'s columns beside them."""
        if self._run is None:
            return
        new = {key: value for key, value in data.items() if not self.holds(at, key)}
        if not new:
            return
        step, self.next_step = self.next_step, self.next_step + 1
        append_jsonl(self.record_path, [{"run_id": self.run_id, "step": step, "at": dict(at), "keys": sorted(new)}])
        self.held.update((_at_key(at), key) for key in new)
        try:
            self._run.log({**new, **at}, step=step, commit=True)
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn("log", err)
            self._run = None

    def log_table(self, key: str, columns: list[str], data: list[list[Any]], at: Mapping[str, int]) -> None:
        """Log a table (e.g. sampled completions) at ``at``, unless the run holds it already."""
        if self._run is None or self.holds(at, key):
            return
        try:
            table = self._wandb.Table(columns=columns, data=data)
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn("table", err)
            return
        self.log({key: table}, at)

    def set_summary(self, values: Mapping[str, Any]) -> None:
        """Set run summary values (idempotent: a resumed process setting them again changes nothing twice)."""
        if self._run is None:
            return
        try:
            self._run.summary.update({key: to_number(key, value) for key, value in values.items()})
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._warn("summary", err)

    def finish(self, exit_code: int | None = None) -> None:
        """Close the W&B run (safe to call twice)."""
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


def job_run(out_dir: str | Path, command: str, experiment: str, tracking: Any, config: dict[str, Any],
            tags: list[str], is_main: bool, resume: bool) -> WandbRun:
    """The W&B run of a grpo or prm train job: project and mode from ``tracking`` (the config's TrackingConfig), group
    = experiment name, run name ``<command>-<experiment>``, run id kept in ``out_dir`` (reused when ``resume``).
    A process that is not the main one (``is_main`` False under accelerate launch) gets a disabled run: no W&B run,
    no files."""
    mode = resolve_mode(tracking.mode, os.environ) if is_main else "disabled"
    name = command.replace(" ", "-")
    run_id = job_run_id(out_dir, command, resume) if mode != "disabled" else None
    return WandbRun(out_dir, project=tracking.project, group=experiment, name=f"{name}-{experiment}", job_type=name,
                    tags=tags, config={"command": command, **config}, mode=mode, run_id=run_id)


class Tracker:
    """One loop arm-and-seed run: appends metrics to ``out_dir/metrics.jsonl`` and mirrors them to a W&B run.

    ``run_id`` makes a resumed run continue the same W&B run without logging a metric twice (see the module
    docstring); keep ``tracker.run_id`` with the checkpoint. A torn last line left in metrics.jsonl by a crash is cut
    off before anything is appended. Rows logged after the last checkpoint of a crashed run are not removed (the
    loop's ledger cuts them), so readers keep the last row per (kind, round, rl_step).
    """

    def __init__(self, out_dir: str | Path, project: str, group: str, name: str, job_type: str, tags: list[str],
                 config: dict[str, Any], mode: str = "offline", run_id: str | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        truncate_torn_tail(self.metrics_path)
        self.mode = resolve_mode(mode, os.environ)
        self.wandb = WandbRun(self.out_dir, project, group, name, job_type, tags, config, self.mode, run_id)
        if self.wandb.active:
            self._send_missing()

    @property
    def run_id(self) -> str | None:
        """The W&B run id (the one given, or wandb's own when none was); None if W&B never started."""
        return self.wandb.run_id

    @property
    def wandb_active(self) -> bool:
        """Whether metrics are also going to a W&B run (False when disabled or after a W&B failure)."""
        return self.wandb.active

    def _send_missing(self) -> None:
        """Send W&B the metrics.jsonl rows and completion tables our record lacks (logged while W&B was off)."""
        if self.metrics_path.exists():
            for row in read_jsonl_tolerant(self.metrics_path):
                metrics = {key: value for key, value in row.items() if key not in RESERVED_KEYS}
                self._send(row["kind"], metrics, row["rl_step"], row["round"])
        for path in sorted(self.out_dir.glob("completions_round*.jsonl")):
            rows = read_jsonl_tolerant(path)
            columns = list(rows[0]) if rows else list(COMPLETION_COLUMNS)
            self.wandb.log_table(TABLE_KEY, columns, [[row.get(key) for key in columns] for row in rows],
                                 {"round": int(path.stem.removeprefix("completions_round"))})

    def _send(self, kind: str, metrics: Mapping[str, Any], rl_step: int, round: int) -> None:
        data = prefixed(PREFIXES[kind], metrics)
        if kind == "eval":
            data.update(question_panels(metrics))
        self.wandb.log(data, {"round": int(round), "rl_step": int(rl_step)})

    def _log(self, kind: str, metrics: Mapping[str, Any], rl_step: int, round: int) -> None:
        append_jsonl(self.metrics_path, [metrics_row(kind, metrics, rl_step, round)])
        self._send(kind, metrics, rl_step, round)

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
        self.wandb.log_table(TABLE_KEY, columns, [[row[key] for key in columns] for row in clean],
                             {"round": int(round)})
        return path

    def finish(self, exit_code: int | None = None) -> None:
        """Close the W&B run (safe to call twice); metrics.jsonl needs no closing (each append is fsynced)."""
        self.wandb.finish(exit_code)

    def __enter__(self):  # returns self (typing.Self needs Python 3.11)
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self.finish(exit_code=1 if exc_type is not None else None)
