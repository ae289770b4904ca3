"""Shared test set-up: no test reads or writes the user's own pvcharge state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemons started by a test (in-process or as `pvcharge run`) keep their mode in a state directory
    of that test alone, never in ~/.local/state or $STATE_DIRECTORY: a mode one test saved (a reload to
    "off", say) must not be restored by the next test's daemon."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    """A test that configures logging (``configure_logging`` writes to a stream it was given) must not
    leave later tests logging to a closed stream."""
    yield
    from pvcharge.logs import reset_logging

    reset_logging()
