"""Shared test set-up: no test reads or writes the user's own pvcharge state."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Daemons started by tests (in-process or as `pvcharge run`) keep their mode in a temporary
    state directory, never in ~/.local/state or $STATE_DIRECTORY."""
    saved = {k: os.environ.get(k) for k in ("XDG_STATE_HOME", "STATE_DIRECTORY")}
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    os.environ.pop("STATE_DIRECTORY", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    """A test that configures logging (``configure_logging`` writes to a stream it was given) must not
    leave later tests logging to a closed stream."""
    yield
    import structlog

    structlog.reset_defaults()
