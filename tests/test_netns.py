"""helpers.netns: the probe, running functions in a private network namespace, set_link.

Tests that need namespaces skip (saying why) where the system forbids them; the probe's
own logic is tested everywhere with a fake /proc/sys.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TCPServer, netns
from helpers.core import hygiene

needs_netns = pytest.mark.skipif(not netns.support().available, reason=f"no namespaces: {netns.support().reason}")


# --------------------------------------------------------------------------- the probe


def _fake_proc_sys(tmp_path, **values: str):
    for name, value in values.items():
        path = tmp_path / name.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return tmp_path


def test_sysctl_verdict_allows_when_nothing_forbids(tmp_path) -> None:
    root = _fake_proc_sys(tmp_path, **{"user.max_user_namespaces": "1000", "user.max_net_namespaces": "1000"})
    reason, checks = netns._sysctl_verdict(root)
    assert reason is None
    assert checks["user.max_user_namespaces"] == "1000"
    assert checks["kernel.unprivileged_userns_clone"] is None  # absent on most kernels


@pytest.mark.parametrize(
    ("sysctl", "needle"),
    [
        ("kernel.unprivileged_userns_clone", "kernel.unprivileged_userns_clone is 0"),
        ("user.max_user_namespaces", "user.max_user_namespaces is 0"),
        ("user.max_net_namespaces", "user.max_net_namespaces is 0"),
    ],
)
def test_sysctl_verdict_names_the_setting_that_forbids(tmp_path, monkeypatch, sysctl: str, needle: str) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)  # as a normal user (root is exempt from the first)
    root = _fake_proc_sys(tmp_path, **{sysctl: "0"})
    reason, _ = netns._sysctl_verdict(root)
    assert reason is not None and needle in reason and "sysctl" in reason


def test_root_is_not_stopped_by_unprivileged_userns_clone(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    reason, _ = netns._sysctl_verdict(_fake_proc_sys(tmp_path, **{"kernel.unprivileged_userns_clone": "0"}))
    assert reason is None


def test_unshare_errors_are_explained() -> None:
    apparmor = netns.explain_unshare_errno(errno.EPERM, {"kernel.apparmor_restrict_unprivileged_userns": "1"})
    assert "AppArmor" in apparmor
    assert "seccomp" in netns.explain_unshare_errno(errno.EPERM, {})
    assert "limit" in netns.explain_unshare_errno(errno.ENOSPC, {})
    assert "EINVAL" in netns.explain_unshare_errno(errno.EINVAL, {})


def test_support_is_probed_once_and_says_why() -> None:
    first, second = netns.support(), netns.support()
    assert first is second  # cached: one trial per process
    assert isinstance(first.reason, str) and first.reason
    assert bool(first) is first.available
    if first.available:
        assert first.checks["trial"]["interfaces"] == ["lo"]  # a fresh namespace has only loopback


def test_unavailable_namespaces_raise_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(netns, "support", lambda: netns.NamespaceSupport(False, "forbidden by test"))

    def noop() -> int:
        return 1

    with pytest.raises(netns.NamespaceUnavailable, match=r"^forbidden by test$"):
        netns.run_in_netns(noop)


# --------------------------------------------------------------------------- bad input, no child needed


def test_rejects_lambdas_and_non_functions() -> None:
    with pytest.raises(TypeError, match=r"defined with def"):
        netns.run_in_netns(lambda: 1)
    with pytest.raises(TypeError, match=r"defined with def"):
        netns.run_in_netns(42)  # type: ignore[arg-type]


def test_rejects_bad_timeouts_and_arguments() -> None:
    def f(x: object) -> None:
        return None

    for bad in (0, -1, 601, "5", True):
        with pytest.raises(ValueError, match=r"timeout_s must be"):
            netns.run_in_netns(f, timeout_s=bad, x=1)
    with pytest.raises(TypeError, match=r"must be JSON data"):
        netns.run_in_netns(f, x=object())


def test_set_link_refuses_the_host_before_touching_it() -> None:
    # Run as root, the ioctl would succeed and cut the machine's own loopback: the guard
    # must refuse first. The loopback still works afterwards.
    with pytest.raises(PermissionError, match=r"only works inside a function run by run_in_netns"):
        netns.set_link("lo", up=False)
    with TCPServer() as server, socket.create_connection(server.address, timeout=2):
        pass


def test_set_link_validates_the_name() -> None:
    for bad in ("", "x" * 16, 7):
        with pytest.raises(ValueError, match=r"1-15 bytes"):
            netns.set_link(bad, up=True)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- in a namespace


def loopback_works(port_outside: int) -> dict:
    import errno
    import socket

    with socket.create_server(("127.0.0.1", 0)) as srv:
        socket.create_connection(srv.getsockname(), timeout=2).close()
    try:  # the host's server is not in this namespace
        socket.create_connection(("127.0.0.1", port_outside), timeout=2).close()
        outside = "connected"
    except OSError as exc:
        outside = errno.errorcode[exc.errno]
    return {"interfaces": [n for _, n in socket.if_nameindex()], "outside": outside, "tuple": (1, 2)}


@needs_netns
def test_runs_a_function_in_an_isolated_namespace() -> None:
    with TCPServer() as server:
        result = netns.run_in_netns(loopback_works, port_outside=server.address[1])
    assert result == {"interfaces": ["lo"], "outside": "ECONNREFUSED", "tuple": [1, 2]}


@needs_netns
def test_runs_source_text_defining_main() -> None:
    assert netns.run_in_netns("def main(a, b):\n    return a + b\n", a=2, b=3) == 5


@needs_netns
def test_loopback_can_start_down() -> None:
    src = """
    def main():
        import errno, socket
        with socket.create_server(("127.0.0.1", 0)) as srv:
            try:
                socket.create_connection(srv.getsockname(), timeout=2).close()
                return "connected"
            except OSError as exc:
                return errno.errorcode[exc.errno]
    """
    assert netns.run_in_netns(src, loopback_up=False) == "ENETUNREACH"
    assert netns.run_in_netns(src) == "connected"


def raises_inside() -> None:
    print("this goes to the child's stderr, not into the answer")
    raise KeyError("missing")


@needs_netns
def test_an_exception_inside_becomes_namespace_error() -> None:
    with pytest.raises(netns.NamespaceError, match=r"^raises_inside\(\) raised in the namespace: KeyError") as info:
        netns.run_in_netns(raises_inside)
    assert info.value.remote_type == "KeyError"
    assert "raise KeyError" in info.value.traceback


@needs_netns
def test_unserialisable_result_and_missing_main_are_errors() -> None:
    with pytest.raises(netns.NamespaceError, match=r"must return JSON data"):
        netns.run_in_netns("def main():\n    return object()\n")
    with pytest.raises(netns.NamespaceError, match=r"no function named 'main'"):
        netns.run_in_netns("x = 1\n")


@needs_netns
def test_timeout_kills_the_child_and_leaves_nothing() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish within 0.5 s"):
        netns.run_in_netns("def main():\n    import time\n    time.sleep(30)\n", timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert hygiene.leftovers().children == []


def cut_loopback_under_keepalive(idle_s: int, interval_s: int, count: int) -> dict:
    import errno
    import socket
    import time

    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle_s)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval_s)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    set_link("lo", up=False)  # noqa: F821 - provided by run_in_netns inside the namespace
    started = time.monotonic()
    client.settimeout(idle_s + interval_s * count + 5)
    try:
        client.recv(1)
        outcome = "data or EOF"
    except OSError as exc:
        outcome = errno.errorcode.get(exc.errno, str(exc))
    return {"outcome": outcome, "after_s": time.monotonic() - started}


@pytest.mark.slow
@needs_netns
def test_keepalive_detects_a_vanished_peer_with_etimedout() -> None:
    result = netns.run_in_netns(cut_loopback_under_keepalive, timeout_s=20, idle_s=1, interval_s=1, count=1)
    assert result["outcome"] == "ETIMEDOUT"
    assert 1.7 <= result["after_s"] <= 4.0  # idle + count * interval = 2 s


_TRIAL_REFUSED = """
from helpers import netns
netns._sysctl_verdict = lambda root=None: (None, {})  # pretend the sysctls allow it: the trial must catch it
status = netns.support()
print(status.available, status.reason)
"""


@needs_netns
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare command")
def test_the_trial_catches_what_the_sysctls_miss() -> None:
    # Inside a user namespace of our own, user.max_user_namespaces = 0 forbids nested
    # namespaces for that namespace only (the host's limit is untouched); the probe's real
    # trial must then report the kernel's refusal.
    python = shlex.quote(sys.executable)
    script = f"echo 0 > /proc/sys/user/max_user_namespaces && exec {python} -c {shlex.quote(_TRIAL_REFUSED)}"
    env = {**os.environ, "PYTHONPATH": str(Path(netns.__file__).resolve().parent.parent)}
    proc = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True, timeout=30, env=env)
    assert proc.stdout.startswith("False unshare() failed with ENOSPC"), (proc.stdout, proc.stderr)


# --------------------------------------------------------------------------- live, or a recording


def count_to(n: int) -> list:
    return list(range(n))


def test_run_or_replay_runs_live_or_replays_the_recording(tmp_path, monkeypatch) -> None:
    path = tmp_path / "run.json"
    if netns.support().available:
        run = netns.run_or_replay(count_to, path, n=3)
        assert run == netns.NamespaceRun([0, 1, 2], True, "live, in a private network namespace")
        netns.save_run(run, path, "on a test machine")
    else:
        netns.save_run(netns.NamespaceRun([0, 1, 2], True, "live"), path, "on a test machine")
    monkeypatch.setattr(netns, "support", lambda: netns.NamespaceSupport(False, "forbidden by the test"))
    replayed = netns.run_or_replay(count_to, path, n=3)
    assert replayed.result == [0, 1, 2] and not replayed.live
    assert "RECORDED earlier (recorded by helpers.netns on a test machine" in replayed.source
    assert "forbidden by the test" in replayed.source
    with pytest.raises(ValueError, match="itself a recording"):
        netns.save_run(replayed, path, "again")
    with pytest.raises(FileNotFoundError, match=r"no live run here \(forbidden by the test\) and no recording"):
        netns.run_or_replay(count_to, tmp_path / "missing.json", n=3)
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(ValueError, match="not a recording made by save_run"):
        netns.run_or_replay(count_to, tmp_path / "bad.json", n=3)


def test_the_lessons_recorded_runs_load(monkeypatch) -> None:
    monkeypatch.setattr(netns, "support", lambda: netns.NamespaceSupport(False, "forbidden by the test"))
    root = Path(__file__).resolve().parent.parent / "notebooks" / "recorded"
    run = netns.run_or_replay(count_to, root / "07-tw-buckets.json")
    assert run.result["time_wait"] == run.result["limit"] and not run.live
    run = netns.run_or_replay(count_to, root / "13-defensive-networking.json")
    assert {r["case"]: r["outcome"] for r in run.result} == {
        "vanished, read timeout only": "our read timeout", "vanished, TCP_USER_TIMEOUT": "kernel error ETIMEDOUT"}
    assert all(r["unacked_bytes"] > 0 for r in run.result) and not run.live
