import pytest
import sqlalchemy as sa

from tests.servers.postgres import PostgresServer


def roundtrip(url: str) -> list[tuple[int, str]]:
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        table = sa.Table(
            "items", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text)
        )
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}])
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(table).order_by(table.c.id))]
    finally:
        engine.dispose()


def test_postgres_session_server(postgres):
    assert postgres.url.startswith("postgresql+psycopg://")
    url = postgres.create_database()
    assert roundtrip(url) == [(1, "one"), (2, "two")]


def test_db_url_is_fresh(db_url):
    # create_all would not fail on a leftover table, the insert of id 1 would.
    assert roundtrip(db_url) == [(1, "one"), (2, "two")]


@pytest.mark.postgres
def test_stop_and_start_again_keeps_data():
    with PostgresServer() as pg:
        engine = sa.create_engine(pg.url, pool_pre_ping=True)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x int)"))
            conn.execute(sa.text("INSERT INTO t VALUES (42)"))
        pg.stop()
        assert not pg.running
        with pytest.raises(sa.exc.OperationalError):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        pg.start()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT x FROM t")).scalar_one() == 42
        engine.dispose()
