"""core: settings from the environment, secret masking, atomic writes, seeding."""
import json, os, random
from pathlib import Path

import numpy as np
import pytest
import torch

from quantnb.core import (atomic_write, default_db_url, default_out_dir, mask_url, read_json, resolve_db_url,
                          set_seed, write_json)


@pytest.mark.parametrize('text, expected', [
    ('mysql+pymysql://u:p@h:3306/d', 'mysql+pymysql://u:***@h:3306/d'),
    ('mysql+pymysql://u:p%40ss%3Aword@h/d', 'mysql+pymysql://u:***@h/d'),
    ('postgresql://u:pw@h/d and mysql://v:pw2@k/e', 'postgresql://u:***@h/d and mysql://v:***@k/e'),
    ('mysql+pymysql://u@h/d', 'mysql+pymysql://u@h/d'),
    ('sqlite:////tmp/a:b@c.sqlite', 'sqlite:////tmp/a:b@c.sqlite'),
    ('no url here: a:b@c', 'no url here: a:b@c'),
])
def test_mask_url(text, expected):
    assert mask_url(text) == expected


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('QUANTNB_HOME', str(tmp_path))
    monkeypatch.delenv('QUANTNB_DB_URL', raising=False)
    assert default_db_url() == f'sqlite:///{tmp_path}/quantnb.sqlite'
    monkeypatch.setenv('QUANTNB_DB_URL', 'mysql+pymysql://root@127.0.0.1/test')
    assert resolve_db_url() == 'mysql+pymysql://root@127.0.0.1/test'
    assert resolve_db_url('sqlite:///x.sqlite') == 'sqlite:///x.sqlite'
    monkeypatch.setenv('QUANTNB_OUT', str(tmp_path / 'runs'))
    assert default_out_dir() == tmp_path / 'runs'


def test_atomic_write_keeps_the_old_version_on_failure(tmp_path):
    target = tmp_path / 'deep' / 'dir' / 'state.bin'
    with atomic_write(target, 'wb') as f: f.write(b'version 1')
    with pytest.raises(RuntimeError):
        with atomic_write(target, 'wb') as f:
            f.write(b'version 2, half')
            raise RuntimeError('killed')
    assert target.read_bytes() == b'version 1'
    assert [p.name for p in target.parent.iterdir()] == ['state.bin']


def test_write_json_handles_numpy_and_refuses_the_unknown(tmp_path):
    write_json(tmp_path / 'a.json', {'x': np.arange(3), 'y': np.float64(1.5), 'p': Path('out')})
    assert read_json(tmp_path / 'a.json') == {'x': [0, 1, 2], 'y': 1.5, 'p': 'out'}
    with pytest.raises(TypeError, match='object is not JSON serialisable'):
        write_json(tmp_path / 'b.json', {'x': object()})
    assert not (tmp_path / 'b.json').exists()


def test_set_seed_makes_python_numpy_and_torch_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.randn(2).tolist()
    set_seed(7); a = draw()
    set_seed(7); b = draw()
    set_seed(8); c = draw()
    assert a == b and a != c
