"""Ridge and LightGBM baselines: the closed form recovers a linear relation; both run on a universe like any model."""
import json, sys, time

import numpy as np
import pytest
import torch

from quantnb.data.universe import read_status, top_n_spells, universe_slice_files

SMALL = dict(seq_len=20, label='ret_next', progress=False)


def test_ridge_recovers_a_known_linear_relation():
    "Synthetic y = Xw + b + noise: the coefficients and intercept come back, and the model predicts them."
    from quantnb.models.baselines import RidgeModel, fit_ridge
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(8, 1)), -0.7
    X = rng.standard_normal((4000, 8)).astype(np.float32)
    Y = X @ w + b + 0.1 * rng.standard_normal((4000, 1))
    fit = fit_ridge(X[:3000], Y[:3000], X[3000:], Y[3000:])
    assert fit['alpha'] <= 0.1   # little noise: the smallest penalties win on validation
    np.testing.assert_allclose(fit['coef'], w, atol=0.02)
    np.testing.assert_allclose(fit['intercept'], [b], atol=0.02)
    model = RidgeModel.from_fit(fit)
    x = torch.from_numpy(np.repeat(X[:16, None, :], 5, axis=1))   # windows: only the last day counts
    x[:, :-1] = 99.0
    np.testing.assert_allclose(model(x).detach().numpy(), X[:16] @ w + b, atol=0.05)


def test_missing_lightgbm_is_one_clear_line(monkeypatch):
    from quantnb.models.baselines import fit_lightgbm
    monkeypatch.setitem(sys.modules, 'lightgbm', None)
    with pytest.raises(ImportError, match=r'pip install "quantnb\[gbdt\]"'):
        fit_lightgbm(np.zeros((10, 2)), np.zeros(10), np.zeros((5, 2)), np.zeros(5))


def test_baselines_are_not_for_classification():
    from quantnb.train.pipeline import TrainParams
    with pytest.raises(ValueError, match='regression baseline'):
        TrainParams(model='ridge', task='classification')
    assert TrainParams(model='lightgbm').model == 'lightgbm'


@pytest.fixture(scope='module')
def slice_db(tmp_path_factory):
    "The bundled 40-stock universe slice in a fresh SQLite database, all of it stored as universe `all40`."
    from quantnb.data.importer import import_paths
    from quantnb.data.universe import save_universe
    url = f'sqlite:///{tmp_path_factory.mktemp("basedb")}/universe.db'
    assert all(r.ok for r in import_paths(universe_slice_files(), url))
    save_universe(url, 'all40', top_n_spells(read_status(universe_slice_files()), 40))
    return url


@pytest.mark.parametrize('model', ['ridge', 'lightgbm'])
def test_a_baseline_run_on_the_universe(model, slice_db, tmp_path, one_torch_thread):
    "The run completes quickly, records its fit, writes the signal analysis, and its saved model predicts the same."
    from quantnb.models.saved import SavedModel
    from quantnb.predict import PredictionEngine
    from quantnb.train.pipeline import BaselineRun, run_training
    t0 = time.perf_counter()
    run = run_training(model=model, symbols='all40', db_url=slice_db, out_dir=str(tmp_path), **SMALL)
    took = time.perf_counter() - t0
    assert isinstance(run, BaselineRun) and took < 30, took
    m = run.manager
    meta = m.metadata
    assert meta['status'] == 'completed' and meta['model_type'] == model
    fit = json.loads((m.run_dir/'results'/'baseline_fit.json').read_text())
    assert fit['train_rows'] > 1000 and fit['val_rows'] > 100 and np.isfinite([fit['train_mse'], fit['val_mse']]).all()
    if model == 'ridge': assert fit['alpha'] in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    else: assert fit['best_iterations'][0] >= 1
    assert (m.run_dir/'results'/'signal_analysis.json').exists() and np.isfinite(meta['signal_metrics']['ic'])
    record = SavedModel.read(m)
    assert record.model_type == model and record.weights_sha256
    if model == 'lightgbm':
        assert [f['file'] for f in record.extra['boosters']] == ['booster_0.txt']
    test = run.bundle.test
    x = torch.stack([test[i][0] for i in range(0, len(test), max(1, len(test) // 64))])
    with torch.no_grad(): torch.testing.assert_close(record.build()(x), run.model(x), rtol=0, atol=0)
    preds = np.asarray(json.loads((m.run_dir/'results'/'predictions.json').read_text())['predictions'])
    ends = test.ends.numpy()
    with torch.no_grad(): again = record.build()(test.values[ends][:, None]).numpy()
    np.testing.assert_allclose(again, preds, rtol=1e-6, atol=1e-7)
    engine = PredictionEngine(m.run_name, output_dir=str(tmp_path), url=slice_db)
    out = engine.predict(list(run.bundle.symbol_names[:3]))
    assert np.isfinite(out['ret_next']).all()


def test_gbdt_extra_installs_lightgbm():
    "`pip install quantnb[gbdt]` asks for LightGBM 4 (and [dev], whose tests use it, too)."
    import os, runpy
    from pathlib import Path
    from unittest import mock
    root = Path(__file__).resolve().parents[1]
    cwd = Path.cwd()
    os.chdir(root)   # setup.py reads settings.ini and README.md from the working directory
    try:
        with mock.patch('setuptools.setup') as setup: runpy.run_path(str(root/'setup.py'))
    finally: os.chdir(cwd)
    extras = setup.call_args.kwargs['extras_require']
    assert extras['gbdt'] == ['lightgbm>=4'] and 'lightgbm>=4' in extras['dev']
