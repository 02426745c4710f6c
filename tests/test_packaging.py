"""`pip install .` builds a wheel that carries the sample data, and the installed package can load it."""
import os, subprocess, sys, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    dest = tmp_path_factory.mktemp('wheel')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(dest),
                    str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (whl,) = dest.glob('quantnb-*.whl')
    return whl


def test_wheel_carries_sample_and_attribution(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f'quantnb/sample/{n}' for n in ['SOURCE.md', 'stock_basic.csv.gz', 'sh600519.csv.gz',
                                                'sz300750.csv.gz']}
    assert expected <= names
    assert len([n for n in names if n.startswith('quantnb/sample/s') and n.endswith('.csv.gz')]) == 11
    meta = next(n for n in names if n.endswith('METADATA'))
    text = zipfile.ZipFile(wheel).read(meta).decode()
    assert 'Requires-Dist: torch>=2.2' in text and 'Requires-Dist: sqlalchemy>=2.0' in text


def test_wheel_carries_the_universe_slice(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert 'quantnb/sample/universe/SOURCE.md' in names
    assert len([n for n in names if n.startswith('quantnb/sample/universe/s') and n.endswith('.csv.gz')]) == 40


def test_installed_wheel_builds_the_default_database_from_its_own_data(wheel, tmp_path):
    target = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ('import quantnb, quantnb.data.db as db; '
            'assert quantnb.__file__.startswith(%r), quantnb.__file__; '
            'print(len(db.StockDataLoader().load_many(adjust=None)))' % str(target))
    env = {**os.environ, 'PYTHONPATH': str(target), 'QUANTNB_HOME': str(tmp_path / 'home')}
    env.pop('QUANTNB_DB_URL', None)
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '25722'


def test_notebook_extra_brings_jupyterlab_and_dev_keeps_it(wheel):
    "`pip install quantnb[notebook]` is what `jupyter lab nbs/` needs; `[dev]` still brings it too."
    with zipfile.ZipFile(wheel) as z: text = z.read(next(n for n in z.namelist() if n.endswith('METADATA'))).decode()
    assert 'Provides-Extra: notebook' in text and 'Provides-Extra: dev' in text
    assert 'Requires-Dist: jupyterlab>=4; extra == "notebook"' in text
    assert 'Requires-Dist: jupyterlab>=4; extra == "dev"' in text and 'Requires-Dist: pytest>=7; extra == "dev"' in text
