"""Training commands started from the shell relaunch themselves under tcmalloc when it is installed."""

import os
import subprocess
import sys
import textwrap

import pytest

from edgeface import _allocator


class Relaunched(Exception):
    pass


@pytest.fixture
def fake_shell(tmp_path, monkeypatch):
    """Pretend this process is `edgeface train --epochs 1` and record any execve instead of doing it."""
    script = tmp_path / "edgeface"
    script.write_text("")
    monkeypatch.setattr(sys, "argv", [str(script), "train", "--epochs", "1"])
    monkeypatch.setattr(_allocator, "find_tcmalloc", lambda: "libtcmalloc_minimal.so.4")
    monkeypatch.delenv("EDGEFACE_TCMALLOC", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    calls = []

    def execve(path, args, env):
        calls.append((path, args, env))
        raise Relaunched

    monkeypatch.setattr(os, "execve", execve)
    return script, calls


def test_a_shell_started_training_command_relaunches_once_with_tcmalloc_preloaded(fake_shell):
    script, calls = fake_shell
    with pytest.raises(Relaunched):
        _allocator.relaunch_with_tcmalloc("train", ["--epochs", "1"])
    path, args, env = calls[0]
    assert path == sys.executable and args == [sys.executable, str(script), "train", "--epochs", "1"]
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4" and env["EDGEFACE_TCMALLOC"] == "0"


def test_an_existing_preload_is_kept_after_tcmalloc(fake_shell, monkeypatch):
    _, calls = fake_shell
    monkeypatch.setenv("LD_PRELOAD", "libother.so")
    with pytest.raises(Relaunched):
        _allocator.relaunch_with_tcmalloc("train", ["--epochs", "1"])
    assert calls[0][2]["LD_PRELOAD"] == "libtcmalloc_minimal.so.4:libother.so"


@pytest.mark.parametrize("case", ["opted out", "already preloaded", "not installed", "other arguments",
                                  "library call"])
def test_no_relaunch_when_it_is_unwanted_or_impossible(fake_shell, monkeypatch, case):
    _, calls = fake_shell
    argv = ["--epochs", "1"]
    if case == "opted out":
        monkeypatch.setenv("EDGEFACE_TCMALLOC", "0")
    elif case == "already preloaded":
        monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc.so.4")
    elif case == "not installed":
        monkeypatch.setattr(_allocator, "find_tcmalloc", lambda: None)
    elif case == "other arguments":  # main(argv) called in-process with arguments of its own
        argv = ["--epochs", "2"]
    else:
        monkeypatch.setattr(sys, "argv", ["/usr/bin/pytest", "train", "--epochs", "1"])
    _allocator.relaunch_with_tcmalloc("train", argv)
    assert calls == []


@pytest.mark.skipif(not sys.platform.startswith("linux") or _allocator.find_tcmalloc() is None,
                    reason="tcmalloc not installed (apt install libtcmalloc-minimal4)")
def test_the_relaunched_process_really_runs_on_tcmalloc(tmp_path):
    script = tmp_path / "edgeface"
    script.write_text(textwrap.dedent("""
        import sys
        from edgeface._allocator import relaunch_with_tcmalloc
        relaunch_with_tcmalloc(sys.argv[1], sys.argv[2:])
        with open("/proc/self/maps") as maps:
            print("tcmalloc" in maps.read())
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "EDGEFACE_TCMALLOC")}
    result = subprocess.run([sys.executable, str(script), "train", "--x"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
