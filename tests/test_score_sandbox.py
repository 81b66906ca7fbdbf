"""The code sandbox, for real: limits, containment and the CodeTests scorer.

Each hostile snippet runs in the real sandbox (subprocess, rlimits, audit hook; network
namespace and an unprivileged user when the tests run as root).
"""

import os
import socket
import uuid

import pytest

from prefdata.score import CodeTests, SandboxLimits, pools_from_texts, run_sandboxed
from prefdata.score.sandbox import extract_code, sandbox_capabilities

# The tests the candidate is run against pass for any code that keeps running: so a result
# other than a pass shows the sandbox stopped the candidate, not the test.
ALWAYS_PASSES = "assert True"
FAST = SandboxLimits(cpu_s=1, wall_s=4, memory_mb=512, max_procs=16)


def _gone(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def test_passing_and_failing_tests():
    r = run_sandboxed("def f(x):\n    return 2 * x", ["assert f(2) == 4", "assert f(3) == 7"], FAST)
    assert (r.status, r.passed, r.total) == ("ok", 1, 2)
    assert "AssertionError" in r.stderr
    r = run_sandboxed("raise SystemExit(0)", ALWAYS_PASSES, FAST)
    assert r.passed == 0  # exiting early is no pass
    r = run_sandboxed("import os\nos._exit(0)", ALWAYS_PASSES, FAST)
    assert r.passed == 0 and r.status == "error"
    r = run_sandboxed(
        "open('scratch.txt', 'w').write('ok')", "assert open('scratch.txt').read() == 'ok'", FAST
    )
    assert r.passed == 1  # its own folder is writable


def test_infinite_loop_is_stopped():
    r = run_sandboxed("while True:\n    pass", ALWAYS_PASSES, FAST)
    assert r.status in ("killed", "timeout") and r.passed == 0
    assert _gone(r.pgid)


def test_sleeping_code_hits_the_wall_clock():
    r = run_sandboxed(
        "import time\ntime.sleep(60)", ALWAYS_PASSES, SandboxLimits(cpu_s=5, wall_s=1.5)
    )
    assert r.status == "timeout" and r.passed == 0 and _gone(r.pgid)


def test_fork_bomb_is_contained():
    if sandbox_capabilities(FAST)["nproc"] == "none":
        msg = "running as root without a sandbox user: RLIMIT_NPROC is not enforced"
        if os.environ.get("CI"):  # CI has the user: there the skip would hide a regression
            pytest.fail(msg)
        pytest.skip(msg)
    r = run_sandboxed("import os\nwhile True:\n    os.fork()", ALWAYS_PASSES, FAST)
    assert r.passed == 0
    assert "BlockingIOError" in r.stderr or r.status in ("killed", "timeout")
    assert _gone(r.pgid)  # the whole process group is gone
    # and this process is not limited: it can still start a child
    child = os.fork()
    if child == 0:
        os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 7


def test_ten_gigabyte_allocation_fails_inside():
    r = run_sandboxed("x = bytearray(10 * 1024 ** 3)", "assert len(x) > 0", FAST)
    assert r.passed == 0 and "MemoryError" in r.stderr


def test_write_outside_the_folder_is_blocked(tmp_path):
    os.chmod(tmp_path, 0o777)  # writable by anyone: only the sandbox can stop the write
    target = tmp_path / f"escape-{uuid.uuid4().hex}"
    code = f"open({str(target)!r}, 'w').write('pwned')"
    r = run_sandboxed(code, ALWAYS_PASSES, FAST)
    assert r.passed == 0 and "PermissionError" in r.stderr
    assert not target.exists()
    lowlevel = f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)"
    r = run_sandboxed(lowlevel, ALWAYS_PASSES, FAST)
    assert r.passed == 0 and not target.exists()
    r = run_sandboxed(f"import os\nos.remove({__file__!r})", ALWAYS_PASSES, FAST)
    assert r.passed == 0 and os.path.exists(__file__)
    r = run_sandboxed("import subprocess\nsubprocess.run(['touch', '/tmp/x'])", ALWAYS_PASSES, FAST)
    assert r.passed == 0 and "PermissionError" in r.stderr


def test_no_network():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        code = (
            f"import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))"
        )
        r = run_sandboxed(code, ALWAYS_PASSES, FAST)
        assert r.passed == 0
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever connected
    finally:
        server.close()
    caps = sandbox_capabilities(FAST)
    assert caps["network"] in ("os", "hook") and caps["memory"] == "os"


def test_code_tests_scorer():
    t = pools_from_texts(
        ["Write add(a, b).", "Write square(x)."],
        [
            [
                "```python\ndef add(a, b):\n    return a + b\n```",
                "def add(a, b):\n    return a - b",
                "while True: pass",
            ],
            ["Here:\n```python\ndef square(x):\n    return x * x\n```"],
        ],
        columns={
            "tests": [["assert add(1, 2) == 3", "assert add(0, 0) == 0"], ["assert square(3) == 9"]]
        },
    )
    ct = CodeTests("tests", limits=FAST, workers=2)
    out = ct(t).table
    cands = [c for row in out["candidates"].to_pylist() for c in row]
    assert [c["scores"]["code"] for c in cands] == [1.0, 0.5, 0.0, 1.0]
    assert cands[2]["flags"] in (["code_killed"], ["code_timeout"])
    assert ct.provenance()["enforced"]["cpu"] == "os"


def test_extract_code():
    assert extract_code("```py\na = 1\n```\ntext\n```python\nb = 2\n```") == "b = 2"
    assert extract_code("plain = 1") == "plain = 1"
    assert extract_code(None) == ""
