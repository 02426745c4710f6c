"""The commands a user types most start fast: `quantnb --help`, `db info` and `runs list` never import torch."""
import os, subprocess, sys
from pathlib import Path

import pytest

QUANTNB = str(Path(sys.executable).parent / 'quantnb')   # the installed console script


def imported_modules(*args, home, url=None):
    "Top-level modules `quantnb *args` imported, read from `python -X importtime` (and the command's exit code)."
    env = {**os.environ, 'QUANTNB_HOME': str(home), 'QUANTNB_OUT': str(home / 'out')}
    env.pop('QUANTNB_DB_URL', None)
    if url: env['QUANTNB_DB_URL'] = url
    r = subprocess.run([sys.executable, '-X', 'importtime', QUANTNB, *args], capture_output=True, text=True,
                       env=env, timeout=120)
    names = {line.rsplit('|', 1)[1].strip() for line in r.stderr.splitlines() if line.startswith('import time:')}
    return r.returncode, names


@pytest.mark.parametrize('args', [['--help'], ['db', 'info'], ['runs', 'list'], ['runs', '--help']])
def test_everyday_commands_do_not_import_torch(args, tmp_path, sqlite_sample_url):
    code, names = imported_modules(*args, home=tmp_path, url=sqlite_sample_url)
    assert code == 0
    assert 'quantnb.cli' in names                     # the measurement saw the command's imports
    assert 'torch' not in names and 'quantnb.experiments' not in names
