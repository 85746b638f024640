"""The drill's own PostgreSQL cluster: started, restarted under a live session, removed."""

from __future__ import annotations

import glob

import psycopg
import pytest

from bench.drill.infra import DrillDatabase, OwnPostgres

pytestmark = pytest.mark.skipif(
    not glob.glob("/usr/lib/postgresql/*/bin/initdb"), reason="needs PostgreSQL's initdb"
)


def test_own_cluster_restarts_ending_every_session_and_is_removed() -> None:
    postgres = OwnPostgres()
    try:
        postgres.init()
        postgres.start()
        database = DrillDatabase(postgres.admin_url, "drill_infra_test")
        database.create()
        with psycopg.connect(database.url, autocommit=True) as session:
            session.execute("CREATE TABLE kept (n integer)")
            session.execute("INSERT INTO kept VALUES (7)")

            went_down, answered = postgres.restart(down_seconds=0.2)

            assert (answered - went_down).total_seconds() >= 0.2
            with pytest.raises(psycopg.OperationalError):
                session.execute("SELECT 1")  # the old session did not survive the restart
        with psycopg.connect(database.url) as fresh:
            assert fresh.execute("SELECT n FROM kept").fetchall() == [(7,)]  # committed data kept
        assert database.terminate_backends() == 0
        database.drop()
    finally:
        postgres.remove()
    assert not postgres.directory.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.admin_url, connect_timeout=2)
