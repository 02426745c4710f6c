"""core: settings from the environment, secret masking, atomic writes, seeding."""
import random
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


def _quantnb_modules():
    import importlib, pkgutil, quantnb
    return [importlib.import_module(m.name) for m in pkgutil.walk_packages(quantnb.__path__, 'quantnb.')
            if not m.name.endswith('_modidx')]


def test_patched_methods_belong_to_their_class_only():
    "A method attached with `patch_to` is named after its class and leaves no module-level function behind."
    import inspect
    from quantnb.core import patch_to
    from quantnb.models.core import build_model
    from quantnb.train import pipeline
    assert pipeline.TrainingRun.build_model.__qualname__ == 'TrainingRun.build_model'
    assert getattr(pipeline, 'build_model', None) in (None, build_model)   # never the run's method
    for mod in _quantnb_modules():
        classes = [c for c in vars(mod).values() if inspect.isclass(c) and c.__module__.startswith('quantnb')]
        methods = {id(f): f'{c.__qualname__}.{k}' for c in classes for k, f in vars(c).items()
                   if inspect.isfunction(f) and f.__name__ == k}   # (not an alias assigned by hand)
        left = [f'{mod.__name__}.{k} is {methods[id(v)]}' for k, v in vars(mod).items() if id(v) in methods]
        assert not left, left
    class Box: pass
    @patch_to(Box)
    def size(self): return 'method'
    assert (size, Box().size(), Box.size.__qualname__) == (None, 'method', f'{Box.__qualname__}.size')
