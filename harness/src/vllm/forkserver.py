"""A fork server for vLLM's Python frontend (genconform writes and runs this).

A cold `vllm serve` spends most of its start-up importing vLLM, torch and
FastAPI. This process imports them once, with the environment the frontends
get, then forks a child per request that runs the very module `python -m`
would run (`vllm.entrypoints.cli.main`), with the request's argv and
environment, its stdout and stderr in the request's log file.

    python forkserver.py MODULE [PRELOAD...]

Protocol: JSON lines. Requests on stdin:
    {"id": 1, "argv": ["serve", ...], "env": {"K": "V"}, "log": "/path"}
Events on stdout:
    {"event": "ready", "pid": P, "threads": [...]}   once, after the imports
    {"event": "spawned", "id": 1, "pid": P}            or
    {"event": "failed", "id": 1, "error": "..."}
    {"event": "exited", "pid": P, "status": RAW}       RAW as waitpid gives it

No orphans: every child leads its own process group and is SIGKILLed by the
kernel when this process dies (PR_SET_PDEATHSIG); when stdin closes (the
harness stopped or died) this process SIGKILLs its children's groups, reaps
them and exits. Whoever started it stops a child by signalling its group.
"""

import ctypes
import json
import os
import selectors
import signal
import sys
import time

PR_SET_PDEATHSIG = 1


def set_pdeathsig(sig):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def main():
    module, preload = sys.argv[1], sys.argv[2:]
    # The protocol gets a private copy of stdout; fd 1 becomes stderr (this
    # process's log), so whatever an import prints cannot corrupt it.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    # `python -m` puts the working directory first on sys.path, not the
    # directory of the script it runs.
    sys.path[0] = os.getcwd()
    set_pdeathsig(signal.SIGKILL)

    started = time.monotonic()
    __import__(module)
    for name in preload:
        try:
            __import__(name)
        except Exception as e:  # not in this release: the child imports its own
            print(f"forkserver: not preloaded: {name}: {e!r}", file=sys.stderr)
    threads = sorted(
        open(f"/proc/self/task/{t}/comm").read().strip()
        for t in os.listdir("/proc/self/task")
    )
    print(
        f"forkserver: imported {module} {' '.join(preload)} in "
        f"{time.monotonic() - started:.1f} s; threads: {threads}",
        file=sys.stderr,
        flush=True,
    )

    def send(event):
        proto.write(json.dumps(event) + "\n")
        proto.flush()

    # SIGCHLD wakes the loop through this pipe; the loop reaps.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # SIGTERM ends the loop the same way a closed stdin does.
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    send({"event": "ready", "pid": os.getpid(), "threads": threads})
    children = set()
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "stdin")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    pending = b""

    def reap():
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            send({"event": "exited", "pid": pid, "status": status})

    while not stopping:
        for key, _ in selector.select(timeout=1.0):
            if key.data == "wake":
                os.read(wake_r, 4096)
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                stopping.append(True)
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if not line.strip():
                    continue
                request = None
                try:
                    request = json.loads(line)
                    pid = fork_child(module, request, [proto.fileno(), wake_r, wake_w])
                except Exception as e:  # the request was bad: say so, go on
                    send(
                        {
                            "event": "failed",
                            "id": (request or {}).get("id"),
                            "error": f"{type(e).__name__}: {e}",
                        }
                    )
                    continue
                children.add(pid)
                send({"event": "spawned", "id": request["id"], "pid": pid})
        reap()

    # The harness is gone or done: no child outlives this process.
    for pid in list(children):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in list(children):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    # Nothing here needs finalizing; tearing down torch and vLLM takes seconds.
    sys.stderr.flush()
    os._exit(0)


def fork_child(module, request, private_fds):
    argv = [str(a) for a in request["argv"]]
    env = {str(k): str(v) for k, v in request.get("env", {}).items()}
    log = request["log"]
    os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(log_fd)
        return pid
    # The child: from here on, only os._exit leaves.
    code = 1
    try:
        os.setpgid(0, 0)
        set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:  # the server died before prctl
            os._exit(1)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        for fd in private_fds:
            os.close(fd)
        # Per-launch environment, before vLLM's main reads any of it.
        os.environ.update(env)
        if os.environ.get("GENCONFORM_FORKSERVER_TRACE"):
            # For tuning the preload list: what the child still imported.
            import atexit

            before = set(sys.modules)

            def imported_after_fork():
                with open(log + ".imports", "w") as out:
                    out.write("\n".join(sorted(set(sys.modules) - before)))

            atexit.register(imported_after_fork)
        sys.argv = [module] + argv
        # `python -m` runs a fresh copy of the module as __main__; the
        # server's imported copy stays only where importers hold it.
        sys.modules.pop(module, None)
        import runpy

        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        # What the interpreter does at exit (join non-daemon threads, run
        # atexit handlers), then leave without returning into the loop.
        import atexit
        import threading

        threading._shutdown()
        atexit._run_exitfuncs()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    main()
