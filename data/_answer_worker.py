"""The symbolic answer check, run in child processes with a hard timeout: the child's loop and the parent's pool.

Why a child process: sympy can take unbounded time or memory on a short string (``10^{10^{10}}``, ``(10^6)!``), and
math-verify's own timeout uses ``signal.alarm``, which only works on the main thread of the main interpreter. A child
that is killed on timeout bounds every check, from any thread or process (a daemon ``multiprocessing`` worker
included: ``subprocess.Popen`` is allowed there, ``multiprocessing`` children are not).

The child (``main``) is started as ``python -I <this file>``, so it imports nothing from this repository. It reads one
JSON request per line, ``[predicted, reference]``, and answers one line, ``1`` or ``0``. It parses each side only
with math-verify's LaTeX path (``$...$`` -> latex2sympy2's ANTLR grammar -> sympy objects), never with
``sympify``/``parse_expr``/``eval``; math-verify's plain-expression path (``ExprExtractionConfig``), which does call
``sympy.parse_expr``, is not used. The child also caps its own memory and per-request CPU time, so it dies on its
own even if the parent is gone. It exits when its stdin closes (the parent exited or closed it). POSIX only
(``selectors`` on pipes, ``resource`` limits).

The parent side (``symbolic_match``) keeps a pool of idle children: a call takes an idle child or starts a new one,
so concurrent calls never wait on each other. On timeout, crash or garbled reply the child is killed and a
replacement is started in the background. The pool is process-global state (like a cache); it is created on first
use, forgotten in a forked child (whose children belong to the parent), and closed at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import threading
import time

STARTUP_TIMEOUT_S = 20.0
"""How long a new child may take to import sympy and math-verify and say it is ready (once per child)."""
MAX_IDLE_WORKERS = 4
"""Idle children kept for reuse; extra ones (left after a burst of concurrent calls) are closed."""
WORKER_MEMORY_BYTES = 1024**3
"""Address-space cap of a child (RLIMIT_AS): a huge integer raises MemoryError there instead of eating the host."""
WORKER_CPU_S = 10
"""Per-request CPU-seconds cap of a child (RLIMIT_CPU): its own backstop if the parent never kills it."""
_READY = b"ready\n"
_IMPORT_ERROR = b"import-error "


# ------------------------------------------------------------------ the child


def _limit_resources() -> None:
    """Cap the child's memory; ignore Ctrl-C (the parent handles it; the child exits on stdin EOF)."""
    import resource  # lazy: in the child process only (POSIX)
    import signal  # lazy: as above

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > WORKER_MEMORY_BYTES:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, hard))


def _arm_cpu_limit() -> None:
    """Let the next request use at most WORKER_CPU_S more CPU seconds; past that the kernel kills the child."""
    try:
        import resource  # lazy: in the child process only (POSIX; ImportError below elsewhere)

        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(usage.ru_utime + usage.ru_stime) + WORKER_CPU_S
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ImportError, ValueError, OSError):
        pass  # not POSIX: the parent's timeout still bounds each call


def _load_checker():
    """math-verify's LaTeX-only check, ``check(predicted, reference) -> bool`` (imports sympy: the slow part)."""
    import logging  # lazy: with math-verify below, in the child process only

    logging.disable(logging.CRITICAL)  # math-verify warns that its signal timeout is off: it is, on purpose
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]

    def check(predicted: str, reference: str) -> bool:
        gold = parse(f"${reference}$", extraction_config=config, parsing_timeout=None)
        target = parse(f"${predicted}$", extraction_config=config, parsing_timeout=None)
        return bool(gold) and bool(target) and verify(gold, target, timeout_seconds=None)

    return check


def main() -> None:
    """The child's loop: JSON ``[predicted, reference]`` lines in, ``1``/``0`` lines out.

    ``argv[1]``, if given, is the parent's ``sys.path`` as JSON, so the child finds sympy and math-verify where the
    parent does (``-I`` dropped PYTHONPATH and this file's folder).
    """
    reply = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the reply channel
    if len(sys.argv) > 1:
        sys.path[:] = [path for path in json.loads(sys.argv[1]) if isinstance(path, str)]
    try:
        _limit_resources()
    except (ImportError, ValueError, OSError):
        pass  # not POSIX, or a stricter limit is already set: the parent's timeout still bounds each call
    try:
        check = _load_checker()
    except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it as a UserError
        reply.write(_IMPORT_ERROR + repr(error).encode("ascii", "replace")[:500] + b"\n")
        return
    reply.write(_READY)
    for line in sys.stdin.buffer:
        _arm_cpu_limit()
        try:
            predicted, reference = json.loads(line)
            ok = isinstance(predicted, str) and isinstance(reference, str) and check(predicted, reference)
        except Exception:  # noqa: BLE001 - sympy raises anything; any failure (MemoryError included) is "no match"
            ok = False
        reply.write(b"1\n" if ok else b"0\n")


# ------------------------------------------------------------------ the parent


class _Worker:
    """One child process and the parent's end of its pipes."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), json.dumps(sys.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        self.ready = False

    def read_line(self, deadline: float) -> bytes | None:
        """One reply line, or None if the child does not finish one before ``deadline`` (or dies)."""
        fd, data = self.proc.stdout.fileno(), b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while not data.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(fd, 64)
                if not chunk:
                    return None  # EOF: the child died
                data += chunk
        return data

    def ask(self, request: bytes, timeout_s: float) -> bool | None:
        """The child's verdict, or None on timeout, crash or a garbled reply (the caller then kills it)."""
        if not self.ready:
            first_line = self.read_line(time.monotonic() + STARTUP_TIMEOUT_S)
            if first_line is not None and first_line.startswith(_IMPORT_ERROR):
                self.close()
                _raise_import_error(first_line[len(_IMPORT_ERROR) :])
            self.ready = first_line == _READY
            if not self.ready:
                return None
        try:
            self.proc.stdin.write(request)
            self.proc.stdin.flush()
        except OSError:
            return None
        answer = self.read_line(time.monotonic() + timeout_s)
        return {b"1\n": True, b"0\n": False}.get(answer)

    def close(self) -> None:
        """Kill the child (it holds no state worth a graceful exit) and reap it."""
        self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        self.proc.wait()


def _raise_import_error(detail: bytes) -> None:
    from ..utils.errors import UserError  # lazy: parent only; the child runs this file alone, outside the package

    raise UserError(
        f"data/_answer_worker.py: the symbolic answer checker cannot import math-verify ({detail.decode().strip()});"
        " install it with `pip install math-verify`"
    )


class _Pool:
    """Idle children of THIS process, reused across calls; a call never waits for another call's child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []

    def take(self) -> _Worker:
        """An idle child, or a new one (so concurrent calls never queue)."""
        with self.lock:
            if self.idle:
                return self.idle.pop()
        return _Worker()

    def give_back(self, worker: _Worker) -> None:
        with self.lock:
            if len(self.idle) < MAX_IDLE_WORKERS:
                self.idle.append(worker)
                return
        worker.close()

    def replace(self, worker: _Worker) -> None:
        """Kill a stuck child; start its replacement now, so it imports while the caller moves on."""
        worker.close()
        with self.lock:
            if len(self.idle) >= MAX_IDLE_WORKERS:
                return
        self.give_back(_Worker())

    def close_all(self) -> None:
        with self.lock:
            workers, self.idle = self.idle, []
        for worker in workers:
            worker.close()


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()
_HOOKS_REGISTERED = False


def _forget_pool_in_forked_child() -> None:
    """After fork: the children in the pool belong to the parent; drop them (closing only our copies of the pipes)."""
    global _POOL, _POOL_LOCK
    _POOL_LOCK = threading.Lock()  # another thread may have held the old one at fork time
    if _POOL is not None:
        for worker in _POOL.idle:
            worker.proc.returncode = 0  # not ours to wait for; keeps Popen's finaliser quiet
            for pipe in (worker.proc.stdin, worker.proc.stdout):
                pipe.close()
    _POOL = None


def _close_pool_at_exit() -> None:
    if _POOL is not None and _POOL.pid == os.getpid():
        _POOL.close_all()


def _pool() -> _Pool:
    """This process's pool, created on first use (with its fork and exit hooks, registered once)."""
    global _POOL, _HOOKS_REGISTERED
    with _POOL_LOCK:
        if _POOL is None or _POOL.pid != os.getpid():
            if not _HOOKS_REGISTERED:
                atexit.register(_close_pool_at_exit)
                if hasattr(os, "register_at_fork"):
                    os.register_at_fork(after_in_child=_forget_pool_in_forked_child)
                _HOOKS_REGISTERED = True
            _POOL = _Pool()
        return _POOL


def symbolic_match(predicted: str, reference: str, timeout_s: float) -> bool:
    """Whether math-verify finds ``predicted`` equivalent to ``reference``, in a child killed after ``timeout_s``.

    False on timeout, crash or any error. Raises UserError if the child cannot import math-verify: a broken install
    must not pass for "every symbolic answer is wrong". The time bound is ``timeout_s`` plus, when no idle child is
    ready, one child start (importing sympy and math-verify: about 0.3 s here; at most STARTUP_TIMEOUT_S).
    """
    pool = _pool()
    request = json.dumps([predicted, reference], ensure_ascii=True).encode() + b"\n"
    try:
        worker = pool.take()
    except (OSError, ValueError):
        return False  # cannot start a child (no executable, process limit): no verdict means no match
    verdict = worker.ask(request, timeout_s)
    try:
        if verdict is None:
            pool.replace(worker)
        else:
            pool.give_back(worker)
    except (OSError, ValueError):
        pass
    return bool(verdict)


if __name__ == "__main__":
    main()
