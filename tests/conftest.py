"""Shared fixtures: fresh databases (SQLite file and real PostgreSQL) and settings."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from gate.config import Settings, load_settings
from gate.store.db import make_engine, upgrade
from tests.door_line import DoorLine

REPO = Path(__file__).resolve().parents[1]
# Taken out of the environment: the gate refuses a GATE_* variable that names no setting.
POSTGRES_URL = os.environ.pop(
    "GATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


@pytest.fixture
def postgres_url() -> str:
    """The test server's URL, for tests that open their own connections (other processes)."""
    return POSTGRES_URL


def _postgres_engine(schema: str) -> Engine:
    return create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database: a SQLite file, or a fresh schema in PostgreSQL."""
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'gate.db'}")
        upgrade(eng)
        yield eng
        eng.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = _postgres_engine(schema)
    upgrade(eng)
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def fresh_database(backend: str, tmp_path: Path, postgres_url: str) -> Iterator[str]:
    """The URL of an empty database: a new SQLite file, or a new PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database, once for SQLite and once for PostgreSQL, for tests
    that build a whole panel or gate on it."""
    with fresh_database(request.param, tmp_path, POSTGRES_URL) as url:
        yield url


MODELS = REPO / "var" / "models"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The verified BlazeFace and FaceMesh networks, fetched once per machine (as `make test` does)."""
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "-m", "gate", "models", "fetch"],
        cwd=REPO,
        check=True,
        capture_output=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATE_")},
    )
    return MODELS


@pytest.fixture
def data_dir(tmp_path: Path, models_dir: Path) -> Path:
    """A fresh data dir that shares the fetched models."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(models_dir)
    return data


@pytest.fixture
def door_line() -> Iterator[DoorLine]:
    """Give its `port` to settings that must leave the real door alone, then check
    that `received()` is empty."""
    line = DoorLine()
    yield line
    line.close()
