"""Run untrusted candidate code against tests in a sandboxed subprocess, and the
:class:`CodeTests` scorer built on it.

What is enforced, and by whom (Linux):

===========================  ==============================================================
OS (kernel)                  CPU time ``RLIMIT_CPU``; address space ``RLIMIT_AS`` (a 10 GB
                             allocation fails); file size ``RLIMIT_FSIZE``; open files
                             ``RLIMIT_NOFILE``; no core dumps; a wall-clock timeout, then
                             ``os.killpg(SIGKILL)`` of the process group (its own session).
OS, when run as root         a new network namespace (``unshare(CLONE_NEWNET)``: no
                             interface but a down loopback, so no network at all), and the
                             code runs as an unprivileged user (default ``nobody``) owning
                             only its temp folder: files elsewhere that are not
                             world-writable cannot be written, and ``RLIMIT_NPROC`` (a fork
                             bomb) is enforced — the kernel does not apply it to root.
OS, when not root            ``RLIMIT_NPROC`` is set to the user's current process count
                             plus ``max_procs``.
Python audit hook            (always, defence in depth; bypassable by native code, so
                             ``ctypes`` imports are refused too) no sockets; no ``open`` for
                             writing, and no remove/rename/mkdir/chmod, outside the temp
                             folder (this is what stops writes to world-writable places such
                             as ``/tmp`` when running as ``nobody``); no ``exec``/``spawn``/
                             ``os.system``/``subprocess`` (``fork`` stays allowed and is
                             bounded by ``RLIMIT_NPROC``).
===========================  ==============================================================

Not covered: a process that calls ``setsid`` escapes ``killpg`` (use cgroups or a container
for hostile code at scale); the pass marker is a nonce held in the runner's memory, which
code introspecting the runner's frames could find. :func:`sandbox_capabilities` reports what
this machine enforces.

>>> r = run_sandboxed("def add(a, b):\\n    return a + b", "assert add(2, 3) == 5")
>>> r.status, r.passed, r.total
('ok', 1, 1)
"""

from __future__ import annotations

import os
import pwd
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prefdata.score.base import Scorer, candidates_view, with_scores

__all__ = [
    "CodeTests",
    "SandboxLimits",
    "SandboxResult",
    "extract_code",
    "run_sandboxed",
    "sandbox_capabilities",
]

CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class SandboxLimits:
    cpu_s: int = 5
    wall_s: float = 10.0
    memory_mb: int = 1024
    file_mb: int = 16
    max_procs: int = 32
    max_open_files: int = 64
    user: str = "nobody"  # used only when running as root
    net_namespace: bool = True
    python: str | None = None  # interpreter for the code; default: one the user can run


def _world_executable(path: str) -> bool:
    real = Path(os.path.realpath(path))
    try:
        if not real.stat().st_mode & 0o001:
            return False
        return all(p.stat().st_mode & 0o001 for p in real.parents)
    except OSError:
        return False


@cache
def _python_for(dropping: bool, given: str | None) -> str:
    """The interpreter that runs candidate code: the given one, else this one, else python3
    on PATH; when the code runs as another user it must be executable by everyone (a
    virtualenv under /root is not)."""
    import shutil

    for cand in (given, sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if cand and os.path.exists(cand) and (not dropping or _world_executable(cand)):
            return cand
    raise RuntimeError(
        "no Python interpreter the sandbox user can execute; set SandboxLimits(python=...)"
    )


@dataclass
class SandboxResult:
    """status: ``ok`` (ran to the end), ``error`` (exit without the pass marker),
    ``timeout`` (wall clock), ``killed`` (a signal: CPU limit, memory)."""

    status: str
    passed: int
    total: int
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    pgid: int | None
    enforced: dict[str, str]


# Launcher: runs as root (if we are) in the new session; drops privileges, then execs the
# runner. Kept as a separate interpreter so no privileged step runs in a preexec_fn of a
# multi-threaded parent.
_LAUNCHER = r"""
import ctypes, os, resource, sys
cfg = dict(a.split("=", 1) for a in sys.argv[1:])
net = "none"
if cfg["netns"] == "1":
    libc = ctypes.CDLL(None, use_errno=True)
    net = "netns" if libc.unshare(0x40000000) == 0 else "hook"
else:
    net = "hook"
def lim(r, v):
    resource.setrlimit(r, (v, v))
lim(resource.RLIMIT_CPU, int(cfg["cpu"]))
lim(resource.RLIMIT_AS, int(cfg["mem"]) << 20)
lim(resource.RLIMIT_FSIZE, int(cfg["fsize"]) << 20)
lim(resource.RLIMIT_NOFILE, int(cfg["nofile"]))
lim(resource.RLIMIT_CORE, 0)
lim(resource.RLIMIT_NPROC, int(cfg["nproc"]))
if cfg.get("uid"):
    os.setgroups([])
    os.setgid(int(cfg["gid"]))
    os.setuid(int(cfg["uid"]))
os.environ["PREFDATA_SANDBOX_NET"] = net
os.execv(cfg["py"], [cfg["py"], "-I", "-S", "-B", "runner.py"])
"""

# Runner: installs the audit hook, reads the nonce from stdin, runs the code then each test,
# writes "<nonce> <passed> <total>" to the status pipe (its fd number is in the environment)
# and exits.
_RUNNER = r"""
import os, sys
_root = os.path.realpath(os.getcwd())
_W = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
def _inside(p):
    if isinstance(p, int):
        return True
    p = os.path.realpath(os.fsdecode(p))
    return p == _root or p.startswith(_root + os.sep) or p in ("/dev/null",)
_BLOCK = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
          "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
          "os.forkpty", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
          "sys.addaudithook", "os.setuid", "os.kill", "os.killpg"}
_PATHS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
          "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.rmtree"}
def _hook(event, args):
    if event in _BLOCK:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "import" and args[0] in ("ctypes", "_ctypes"):
        raise PermissionError("sandbox: ctypes is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & _W)
        if writing and not _inside(path):
            raise PermissionError(f"sandbox: writing outside the sandbox folder: {path}")
    elif event in _PATHS:
        for p in args[:2]:
            if isinstance(p, (str, bytes, os.PathLike)) and not _inside(p):
                raise PermissionError(f"sandbox: {event} outside the sandbox folder: {p}")
_nonce = sys.stdin.readline().strip()
sys.stdin.close()
_status = os.fdopen(int(os.environ.pop("PREFDATA_SANDBOX_FD")), "w")
import traceback
_src = open("solution.py").read()
_tests = [open(f"test_{i}.py").read() for i in range(int(open("ntests").read()))]
sys.addaudithook(_hook)
_ns = {"__name__": "__main__", "__builtins__": __builtins__}
_passed = 0
try:
    exec(compile(_src, "solution.py", "exec"), _ns)
    for _i, _t in enumerate(_tests):
        try:
            exec(compile(_t, f"test_{_i}.py", "exec"), dict(_ns))
            _passed += 1
        except BaseException:
            traceback.print_exc()
except BaseException:
    traceback.print_exc()
_status.write(f"{_nonce} {_passed} {len(_tests)}\n")
_status.flush()
os._exit(0)
"""


@cache
def _netns_works() -> bool:
    """Whether this process may create a network namespace (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        return False
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                "-c",
                "import ctypes,sys;sys.exit(ctypes.CDLL(None).unshare(0x40000000) != 0)",
            ],
            timeout=10,
            capture_output=True,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _user_procs(uid: int) -> int:
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def sandbox_capabilities(limits: SandboxLimits | None = None) -> dict[str, str]:
    """What this machine enforces: network, user, nproc, each ``os`` or ``hook``.

    >>> sorted(sandbox_capabilities())
    ['cpu', 'memory', 'network', 'nproc', 'user', 'writes']
    """
    limits = limits or SandboxLimits()
    root = os.geteuid() == 0
    drop = root and _lookup_user(limits.user) is not None
    return {
        "cpu": "os",
        "memory": "os",
        "network": "os" if limits.net_namespace and _netns_works() else "hook",
        "user": f"os:{limits.user}" if drop else ("hook" if root else f"os:uid{os.geteuid()}"),
        "nproc": "os" if (not root or drop) else "none",
        "writes": "os+hook" if drop or not root else "hook",
    }


def _kill_group(pgid: int, deadline_s: float = 5.0) -> bool:
    """SIGKILL the process group until it is empty (signals are delivered asynchronously and
    a fork bomb may still be forking). Returns whether it emptied before the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() > end:
            return False
        time.sleep(0.01)


def _lookup_user(name: str):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def run_sandboxed(
    code: str, tests: str | Sequence[str], limits: SandboxLimits | None = None
) -> SandboxResult:
    """Run ``code`` and then each test snippet (asserts) in one sandboxed Python process.

    ``passed`` counts the tests that raised nothing after the code ran; if the code itself
    raises, none pass. The process group is killed at the end, whatever happened.
    """
    limits = limits or SandboxLimits()
    tests = [tests] if isinstance(tests, str) else list(tests)
    caps = sandbox_capabilities(limits)
    root = os.geteuid() == 0
    user = _lookup_user(limits.user) if root else None
    with tempfile.TemporaryDirectory(prefix="prefdata-sbx-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        (work / "runner.py").write_text(_RUNNER)
        (work / "solution.py").write_text(code)
        (work / "ntests").write_text(str(len(tests)))
        for i, t in enumerate(tests):
            (work / f"test_{i}.py").write_text(t)
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        args = {
            "netns": "1" if caps["network"] == "os" else "0",
            "cpu": limits.cpu_s,
            "mem": limits.memory_mb,
            "fsize": limits.file_mb,
            "nofile": limits.max_open_files,
            "py": _python_for(user is not None, limits.python),
        }
        if user is not None:
            os.chmod(tmp, 0o711)
            for p in [work, *work.iterdir()]:
                os.chown(p, user.pw_uid, user.pw_gid)
            args.update(
                uid=user.pw_uid, gid=user.pw_gid, nproc=_user_procs(user.pw_uid) + limits.max_procs
            )
        else:
            args["nproc"] = _user_procs(os.geteuid()) + limits.max_procs
        nonce = secrets.token_hex(16)
        read_fd, write_fd = os.pipe()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(work),
            "LANG": "C.UTF-8",
            "PREFDATA_SANDBOX_FD": str(write_fd),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
        }
        start = time.monotonic()
        with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _LAUNCHER,
                    *(f"{k}={v}" for k, v in args.items()),
                ],
                cwd=work,
                env=env,
                stdin=subprocess.PIPE,
                stdout=fo,
                stderr=fe,
                pass_fds=(write_fd,),
                start_new_session=True,
            )
            os.close(write_fd)
            status = "ok"
            try:
                proc.stdin.write((nonce + "\n").encode())
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                proc.kill()
                proc.wait()
                _kill_group(proc.pid)
        wall = time.monotonic() - start
        with os.fdopen(read_fd, "r") as f:
            marker = f.read().split()
        passed = 0
        if len(marker) == 3 and marker[0] == nonce:
            passed = int(marker[1])
        elif status == "ok":
            status = "killed" if proc.returncode and proc.returncode < 0 else "error"
        stdout = out_path.read_bytes()[:65536].decode("utf-8", "replace")
        stderr = err_path.read_bytes()[:65536].decode("utf-8", "replace")
    return SandboxResult(
        status, passed, len(tests), proc.returncode, stdout, stderr, wall, proc.pid, caps
    )


def extract_code(response: str | None, language: str = "python") -> str:
    """The code in a response: the last fenced block tagged ``language`` (or untagged);
    the whole response when it has no fence.

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nDone.")
    'x = 1'
    """
    import re

    if not response:
        return ""
    blocks = re.findall(r"```([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", response, re.S)
    tagged = [b for tag, b in blocks if tag.lower() in (language, "py", "python3", "")]
    if tagged:
        return tagged[-1].rstrip("\n")
    return response if not blocks else blocks[-1][1].rstrip("\n")


@dataclass(frozen=True)
class CodeTests(Scorer):
    """Fraction of the tests in the pool-level column ``tests_col`` that the candidate's
    code passes, run by :func:`run_sandboxed` (see the module docstring for what is
    enforced). ``tests_col`` holds one test snippet (a string of asserts: 1.0 or 0.0) or a
    list of them (the fraction that passed). Flags: ``{name}_timeout``, ``{name}_killed``
    (CPU or memory limit), ``{name}_error`` (the process died without a result). A null
    tests value gives a null score and ``{name}_no_tests``.

    >>> CodeTests("tests").required_columns()
    ('prompt_id', 'prompt', 'candidates', 'tests')
    """

    checkpoint = True  # running code is costly though nothing is set up

    tests_col: str
    name: str = "code"
    language: str = "python"
    limits: SandboxLimits = SandboxLimits()
    workers: int = 4

    def required_columns(self) -> tuple[str, ...]:
        return (*self.requires, self.tests_col)

    def source(self) -> dict[str, Any]:
        return {
            "function": "prefdata.score.sandbox.run_sandboxed",
            "enforced": sandbox_capabilities(self.limits),
            "python": sys.version.split()[0],
        }

    def process(self, table: pa.Table) -> pa.Table:
        view = candidates_view(table)
        tests = table[self.tests_col].to_pylist()
        values = np.full(len(view), np.nan)
        flags: list[list[str]] = [[] for _ in range(len(view))]
        jobs = []
        for k, r in enumerate(view.row):
            t = tests[r]
            if t is None or (not isinstance(t, str) and len(t) == 0):
                flags[k].append(f"{self.name}_no_tests")
                continue
            jobs.append((k, extract_code(view.responses[k], self.language), t))
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as ex:
            results = list(ex.map(lambda j: run_sandboxed(j[1], j[2], self.limits), jobs))
        for (k, _, _), res in zip(jobs, results, strict=True):
            values[k] = res.passed / res.total if res.total else np.nan
            if res.status != "ok":
                flags[k].append(f"{self.name}_{res.status}")
        return with_scores(table, {self.name: values}, flags=flags)
