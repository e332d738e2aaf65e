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
