"""The demo's deployment secret: the environment, else one key file for all."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from dispatcher.demo.secret import SECRET_FILE, SECRET_VARIABLE, deployment_secret

GOOD = "a-secret-of-more-than-thirty-two-bytes"


def test_the_variable_wins(tmp_path: Path) -> None:
    assert deployment_secret({SECRET_VARIABLE: GOOD}, tmp_path) == GOOD
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "value",
    [pytest.param("short", id="short"), pytest.param("x" * 31, id="31-bytes")],
)
def test_a_weak_variable_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match=f"{SECRET_VARIABLE} must be at least 32"):
        deployment_secret({SECRET_VARIABLE: value}, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "environ",
    [pytest.param({}, id="unset"), pytest.param({SECRET_VARIABLE: ""}, id="empty")],
)
def test_without_it_a_key_file_is_made_once(
    tmp_path: Path, environ: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "dispatcher.demo.secret")
    first = deployment_secret(environ, tmp_path)
    path = tmp_path / SECRET_FILE
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().strip() == first
    assert len(first) >= 32
    (made,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in made.getMessage()
    assert f"Set {SECRET_VARIABLE} in production" in made.getMessage()

    caplog.clear()
    assert deployment_secret(environ, tmp_path) == first
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_the_working_directory_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    secret = deployment_secret({})
    assert (tmp_path / SECRET_FILE).read_text().strip() == secret


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    path.write_text(GOOD)
    path.chmod(0o644)
    with pytest.raises(ValueError, match="has mode 0644.*chmod 600"):
        deployment_secret({}, tmp_path)
    assert path.read_text() == GOOD  # never replaced behind the user's back


def test_a_short_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="holds 5 bytes.*at least 32"):
        deployment_secret({}, tmp_path)


def _secret_in(directory: str) -> str:
    return deployment_secret({}, Path(directory))


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    # Like gunicorn workers booting at once on a fresh directory.
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        secrets = pool.map(_secret_in, [str(tmp_path)] * 16)
    assert len(set(secrets)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]
    assert os.stat(tmp_path / SECRET_FILE).st_mode & 0o777 == 0o600
