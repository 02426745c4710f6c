"""Shared fixtures: an isolated QUANTNB_HOME, and sample/empty databases on SQLite and on a real MariaDB.

MariaDB is expected at 127.0.0.1:3306 (root, no password) or at $QUANTNB_TEST_MYSQL_URL. Tests that
need it are skipped when it does not answer, except under CI (`CI` set), where they fail.
"""
import os, uuid

import pytest
import sqlalchemy as sa

MYSQL_URL = os.environ.get('QUANTNB_TEST_MYSQL_URL', 'mysql+pymysql://root@127.0.0.1:3306/test')
BACKENDS = ['sqlite', 'mysql']


@pytest.fixture(scope='session', autouse=True)
def quantnb_home(tmp_path_factory):
    "Every test process gets its own QUANTNB_HOME, so the user's ~/.quantnb is never touched."
    home = tmp_path_factory.mktemp('quantnb_home')
    mp = pytest.MonkeyPatch()
    mp.setenv('QUANTNB_HOME', str(home))
    mp.delenv('QUANTNB_DB_URL', raising=False)
    yield home
    mp.undo()


@pytest.fixture(scope='module')
def one_torch_thread():
    """Tiny models: one intra-op thread; on a shared CPU, OpenMP workers spinning against each other make RNN steps
    100x slower."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='session')
def mysql_server():
    "An engine on the MariaDB server's `test` database (admin connection used to create scratch databases)."
    engine = sa.create_engine(MYSQL_URL)
    try:
        with engine.connect(): pass
    except sa.exc.OperationalError as e:
        if os.environ.get('CI'): pytest.fail(f'MariaDB must answer at {MYSQL_URL} under CI: {e}')
        pytest.skip(f'MariaDB not reachable at {MYSQL_URL}')
    yield engine
    engine.dispose()


@pytest.fixture(scope='session')
def make_mysql_db(mysql_server):
    "Factory: a fresh, empty MariaDB database; returns its URL. All are dropped at the end of the session."
    created = []
    def make(prefix='qnb_test'):
        name = f'{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}'
        with mysql_server.begin() as conn: conn.exec_driver_sql(f'CREATE DATABASE `{name}` CHARACTER SET utf8mb4')
        created.append(name)
        return mysql_server.url.set(database=name).render_as_string(hide_password=False)
    yield make
    with mysql_server.begin() as conn:
        for name in created: conn.exec_driver_sql(f'DROP DATABASE IF EXISTS `{name}`')


def _new_url(backend, tmp_path_factory, make_mysql_db):
    if backend == 'sqlite': return f'sqlite:///{tmp_path_factory.mktemp("db") / "quantnb.sqlite"}'
    return make_mysql_db()


@pytest.fixture(scope='session')
def sqlite_sample_url(tmp_path_factory):
    "An SQLite file holding the bundled sample (shared by the session: do not write to it)."
    from quantnb.data.importer import load_sample
    url = f'sqlite:///{tmp_path_factory.mktemp("db") / "sample.sqlite"}'
    load_sample(url)
    return url


@pytest.fixture(scope='session')
def mysql_sample_url(make_mysql_db):
    "A MariaDB database holding the bundled sample (shared by the session: do not write to it)."
    from quantnb.data.importer import load_sample
    url = make_mysql_db('qnb_sample')
    load_sample(url)
    return url


@pytest.fixture(scope='session', params=BACKENDS)
def sample_db_url(request):
    "The bundled sample on each backend."
    return request.getfixturevalue(f'{request.param}_sample_url')


@pytest.fixture(params=BACKENDS)
def empty_db_url(request, tmp_path_factory):
    "A fresh database with the quantnb tables and no rows, on each backend."
    from quantnb.data.db import init_db
    url = _new_url(request.param, tmp_path_factory,
                   request.getfixturevalue('make_mysql_db') if request.param == 'mysql' else None)
    init_db(url)
    return url


def table_dump(url, table='stock_kline_data'):
    "Every row of a table, sorted, as plain tuples: equal dumps mean an unchanged table."
    from quantnb.data.db import get_engine, metadata
    t = metadata.tables[table]
    with get_engine(url).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]


SMALL_TRANSFORMER = '{"d_model": 32, "head_dim": 8, "ffn_dim": 64}'


@pytest.fixture(scope='session')
def pretrained_transformer(tmp_path_factory):
    """One masked-pretraining run (a small transformer, five stocks, ~300 optimiser steps) shared by the pretraining
    and transfer tests."""
    from quantnb.train.pipeline import run_training
    out = tmp_path_factory.mktemp('pretrain_out')
    run = run_training(model='transformer', task='pretrain', pretext='masked',
                       symbols='600519,000001,600036,000858,601318',
                       epochs=2, seq_len=30, batch_size=64, model_kwargs=SMALL_TRANSFORMER, out_dir=str(out),
                       progress=False)
    return out, run
