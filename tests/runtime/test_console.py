import io
import logging
import sys

from edgeface_runtime.commandline import console_logging


def test_console_logging_follows_the_current_stderr_even_after_the_first_one_is_closed(monkeypatch):
    name = "edgeface_test_console"
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    logger = console_logging(name, logging.INFO)
    logger.info("one")
    first.close()  # e.g. a test runner's captured stream, gone after the first command
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logger.info("two")
    assert second.getvalue() == "two\n"
    assert (len(logging.getLogger(name).handlers) == 1
            and console_logging(name, logging.INFO).handlers == logger.handlers)


def test_console_logging_defers_to_a_configured_root_logger(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])
    logger = console_logging("edgeface_test_console_deferred", logging.WARNING, defer_to_root=True)
    assert logger.handlers == [] and logger.level == logging.WARNING


def test_native_lines_are_held_back_in_a_quiet_command_and_shown_when_the_call_fails(monkeypatch, capfd):
    import os

    import pytest

    from edgeface_runtime.commandline import native_log_captured

    monkeypatch.setenv("EDGEFACE_NATIVE_LOG", "0")  # what a command without -v sets
    with native_log_captured():
        os.write(2, b"I0000 banner a library prints at import\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(RuntimeError):
        with native_log_captured():
            os.write(2, b"E0000 the native reason\n")
            raise RuntimeError("load failed")
    assert "the native reason" in capfd.readouterr().err  # never lost when it matters
    monkeypatch.setenv("EDGEFACE_NATIVE_LOG", "1")  # -v, or an application embedding the library
    with native_log_captured():
        os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n"


def test_one_exit_code_table_maps_every_error_family():
    from edgeface_runtime import _errors
    from edgeface_runtime.commandline import exit_code, exit_code_for

    assert exit_code_for(_errors.NoFaceError("x")) == exit_code("no_face") == 4
    assert exit_code_for(_errors.InterpreterNotFoundError("x")) == exit_code_for(ImportError("x")) == 7
    assert exit_code_for(FileNotFoundError("x")) == exit_code_for(ValueError("x")) == 2
    assert exit_code_for(_errors.GalleryModelMismatchError("x")) == 8
    assert _errors.DownloadError("x").exit_code == 9

    class Lost(RuntimeError):
        exit_code_name = "worker_lost"  # how a package above the runtime names its row

    assert exit_code_for(Lost()) == 10
    assert exit_code_for(TypeError("a bug")) is None  # not a user's mistake: the traceback stays
