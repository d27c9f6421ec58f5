"""A warm worker: one process per machine that has imported torch, Lightning, Hydra and
the optimizers once, and forks a child for each job of a local run.

Importing them takes 8-9 s on a loaded 2-core machine (``import lightning`` alone pulls
in torchmetrics, scipy.signal and torch._dynamo through Lightning's version checks and
cannot be made lazy from outside Lightning); a forked child starts with all of it in
memory, so a job pays milliseconds instead.

Protocol (a unix stream socket): the client sends its argv, working directory and
environment, with its stdin, stdout and stderr as file descriptors (``SCM_RIGHTS``). The
worker forks a *session* process, which forks the *command* process: that one takes over
the descriptors, directory and environment and runs :func:`iishpo.cli.main`. The session
answers ``started <pid>``, passes on each signal number the client forwards, and answers
``exit <code>`` when the command ends. When the client's connection drops (the client was
SIGKILLed) the session kills the command at once: a stage journal must never get a second
writer from a rerun of its job. The command also dies with its session
(``PR_SET_PDEATHSIG``).

The client (:func:`run_via_worker`) imports only the standard library. With no worker
reachable (``IISHPO_WORKER`` unset, no socket, a socket of another machine on a shared
file system) the command runs in-process, as it always did.

    python -m iishpo.worker --socket .snakemake/iishpo-worker.sock [--parent-pid PID] [--overrides JSON]

serves until SIGTERM/SIGINT, or until the process ``--parent-pid`` (Snakemake) is gone.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

#: names the worker's socket; set by the workflow for its jobs
SOCKET_VARIABLE = "IISHPO_WORKER"
#: the length of the request that follows the header (which carries the descriptors)
_HEADER = struct.Struct("!I")
#: descriptors handed to the worker: stdin, stdout, stderr
_STDIO = (0, 1, 2)
#: seconds between checks that the parent process is still there
_PARENT_POLL_S = 2.0
#: the signals a client passes on to its command
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
#: seconds a starting worker has to bind its socket (its imports come after)
_BIND_TIMEOUT_S = 60.0
#: read once at interpreter start: a job with other values must not run in this worker
STARTUP_VARIABLES = ("PYTHONHASHSEED", "PYTHONPATH", "PYTHONSAFEPATH")


# -- client ---------------------------------------------------------------------------


def run_via_worker(argv: list[str]) -> int | None:
    """Run ``python -m iishpo <argv>`` in the worker named by ``$IISHPO_WORKER``.

    Returns the command's exit code, or ``None`` when no worker took the command (run it
    in-process then). Signals in :data:`FORWARDED` that reach this process are passed on
    to the command while it runs.
    """
    path = os.environ.get(SOCKET_VARIABLE)
    if not path or not argv:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        request = json.dumps({
            "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "python": sys.executable,
        }).encode()
        socket.send_fds(conn, [_HEADER.pack(len(request))], list(_STDIO))
        conn.sendall(request)
        replies = conn.makefile("r", encoding="ascii")
        started = replies.readline()
    except OSError:
        conn.close()
        return None
    if not started.startswith("started "):
        conn.close()  # refused (another interpreter or hash seed), or could not fork: nothing ran
        return None

    def forward(signum: int, frame: object) -> None:
        try:
            conn.sendall(f"{signum}\n".encode())
        except OSError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)
    try:
        reply = replies.readline()
    finally:
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        conn.close()
    if not reply.startswith("exit "):
        print("iishpo: the worker went away while running the command", file=sys.stderr)
        return 1
    return int(reply.split()[1])


class LocalWorker:
    """The warm worker of one local Snakemake run: started when the run starts its jobs,
    stopped when it ends (and gone with Snakemake in any case, by ``--parent-pid``).

    It runs in a session of its own, so that Ctrl-C in the terminal reaches the jobs'
    clients, which pass it on to their commands, and not the worker. Its socket lives in a
    fresh temporary directory: a unix socket path has at most 107 bytes, and a working
    directory may be deep or on a shared file system. Jobs find it through
    :data:`SOCKET_VARIABLE`, which :meth:`start` sets in this process's environment for
    the jobs it spawns.
    """

    def __init__(self, log: Path, env: dict[str, str] | None = None, overrides: Sequence[str] = ()) -> None:
        self.log = log
        self.env = env or {}
        self.overrides = list(overrides)
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: Path | None = None

    def start(self) -> None:
        """Start the worker; when it cannot start, say so on stderr and leave the jobs to
        run as processes of their own."""
        self._directory = Path(tempfile.mkdtemp(prefix="iishpo-worker-"))
        path = self._directory / "worker.sock"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "iishpo.worker", "--socket", str(path), "--parent-pid", str(os.getpid()),
                 "--overrides", json.dumps(self.overrides)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**os.environ, **self.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + _BIND_TIMEOUT_S
        while not path.exists() and self._process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if not path.exists():
            self.stop()
            print(f"iishpo: the warm worker did not start (see {self.log}); every job imports "
                  "torch and Lightning itself", file=sys.stderr)
            return
        os.environ[SOCKET_VARIABLE] = str(path)
        print(f"iishpo: a warm worker (pid {self._process.pid}) runs the jobs (log: {self.log})",
              file=sys.stderr)

    def stop(self) -> None:
        """Stop the worker and remove its socket; commands still running are not touched."""
        os.environ.pop(SOCKET_VARIABLE, None)
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


# -- worker ---------------------------------------------------------------------------


def preload(overrides: Sequence[str] = ()) -> None:
    """Import everything a training job needs (the light jobs need a part of it), compose
    the configuration that the jobs will ask for (``overrides``: the run's), read the
    package versions their results record and the callback entry points every Trainer
    asks for, and freeze the result.

    Frozen, the ~400 000 objects are out of the garbage collector's reach in every forked
    job: otherwise a job's first full collection scanned them all, and so copied every
    page that holds one, 0.3-0.5 s per job. Never train here: a fork of a process that has
    run a multi-threaded convolution waits forever in its own first one (OpenMP's threads
    do not survive ``fork``).
    """
    import iishpo.cli
    import iishpo.jobs.evaluation
    import iishpo.jobs.stage  # noqa: F401  (torch, Lightning)
    from iishpo.optimizers import algorithm
    from iishpo.results.provenance import package_versions
    from iishpo.settings.config import ConfigError, load_settings
    from iishpo.training.runtime import look_up_entry_points_once

    package_versions()
    look_up_entry_points_once()
    try:
        settings = load_settings(overrides)
    except ConfigError as err:  # the jobs will report it, each in its own log
        _note(f"cannot compose the run's configuration: {err}")
    else:
        _note(f"composed the configuration with overrides {list(overrides)}")
        for name, optimizer in settings.optimizers.items():  # each with its library
            try:
                algorithm(name, optimizer)
            except ImportError as err:  # its stages will report it
                _note(str(err))
    gc.freeze()


def serve(path: Path, parent_pid: int | None = None, overrides: Sequence[str] = ()) -> None:
    """Accept jobs on ``path`` until SIGTERM/SIGINT or until ``parent_pid`` is gone.

    The socket listens before the imports: a client that connects meanwhile waits in the
    backlog for the worker to be ready instead of paying the imports itself.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    try:
        preload(overrides)
        _note(f"serving on {path}")
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # sessions are reaped by the kernel
        while parent_pid is None or _alive(parent_pid):
            if not select.select([listener], [], [], _PARENT_POLL_S)[0]:
                continue
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                code = 1
                try:
                    code = _session(conn)
                except BaseException:  # noqa: BLE001 - a forked session must never return to this loop
                    traceback.print_exc()
                finally:
                    os._exit(code)
            conn.close()
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _session(conn: socket.socket) -> int:
    """Run one client's command in a child; forward its signals; kill it if the client dies."""
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, len(_STDIO))
    request = json.loads(_receive(conn, _HEADER.unpack(header)[0]))
    mismatch = _mismatch(request)
    if mismatch:
        _note(f"refused {request['argv'][:1]} in {request['cwd']}: {mismatch}")
        conn.sendall(f"refused {mismatch}\n".encode())
        return 0
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run_command(request, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(f"started {pid}\n".encode())
    pidfd = os.pidfd_open(pid)
    pending = b""
    while True:
        ready = select.select([conn.fileno(), pidfd], [], [])[0]
        if pidfd in ready:
            break
        data = conn.recv(64)
        if not data:  # the client is gone: its command must not outlive it
            os.kill(pid, signal.SIGKILL)
            break
        pending += data
        *numbers, pending = pending.split(b"\n")
        for number in numbers:
            os.kill(pid, int(number))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    code = code if code >= 0 else 128 - code  # killed by a signal: the shell's convention
    _note(f"ran {request['argv'][:1]} in {request['cwd']} as pid {pid}: exit {code}")
    try:
        conn.sendall(f"exit {code}\n".encode())
    except OSError:
        pass
    return 0


def _note(message: str) -> None:
    print(f"iishpo.worker[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def _mismatch(request: dict) -> str | None:
    """Why this worker cannot run the request as a fresh process would, if it cannot:
    another interpreter, or a variable Python read at start-up with another value."""
    if request["python"] != sys.executable:
        return f"python {request['python']} is not the worker's {sys.executable}"
    for name in STARTUP_VARIABLES:
        if request["env"].get(name) != os.environ.get(name):
            return f"{name}={request['env'].get(name)!r} differs from the worker's {os.environ.get(name)!r}"
    return None


def _receive(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection mid-request")
        data += chunk
    return data


def _run_command(request: dict, fds: list[int]) -> None:
    """In the forked child: become the client's process and run its command; never returns."""
    code = 1
    try:
        _die_with_parent()
        for fd, target in zip(fds, _STDIO):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["iishpo", *request["argv"]]
        from iishpo.cli import main

        code = main(request["argv"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must end in os._exit, whatever the command raised
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _die_with_parent() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m iishpo.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", type=Path, required=True, help="unix socket to listen on")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    parser.add_argument("--overrides", type=json.loads, default=[],
                        help="the run's Hydra overrides as a JSON list: its jobs find that configuration composed")
    args = parser.parse_args(argv)
    serve(args.socket, args.parent_pid, args.overrides)


if __name__ == "__main__":
    main()
