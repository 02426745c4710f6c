"""The record of a saved model (`SavedModel`): written by `TrainingManager.save_model`, read by one function and rebuilt
by one `build()`; files in the layout written before the record existed; tampered weights; and two-stage runs through
`quantnb runs show | predict | verify`."""
import re, shutil

import pytest
import torch

from quantnb import cli
from quantnb.core import read_json, sha256_file, write_json
from quantnb.models.saved import BUILDERS, CheckpointError, SavedModel, load_saved_model
from quantnb.predict import PredictionEngine, open_engine
from quantnb.strategy.two_stage import StrategyEngine, StrategySpec, load_strategy_network, run_two_stage
from quantnb.train.pipeline import run_training

TINY = '{"d_model": 16, "n_layers": 1, "n_heads": 2, "ffn_dim": 32}'
pytestmark = pytest.mark.usefixtures('one_torch_thread')

# model/config.json as the release before the record wrote it (keys in its order; no run_name or created_at)
OLD_PRICE_KEYS = ('model_type', 'input_size', 'output_size', 'feature_names', 'feature_set', 'seq_len', 'horizon',
                  'task', 'flat_threshold', 'adjust', 'symbols', 'model', 'normalizer', 'weights_sha256')
OLD_STRATEGY_KEYS = ('model_type', 'stage1_run', 'feature_kind', 'd_features', 'hidden_size', 'n_positions', 'dropout',
                     'window_days', 'symbols', 'cost_bps', 'loss', 'feature_mean', 'feature_std', 'split',
                     'weights_sha256')


@pytest.fixture(scope='module')
def out(tmp_path_factory):
    return tmp_path_factory.mktemp('out')


@pytest.fixture(scope='module')
def stage1(out):
    "A finished price-transformer run on two stocks."
    return run_training(model='enhanced_transformer', symbols='600519,000001', epochs=1, seq_len=30,
                        start_date='2016-01-01', model_kwargs=TINY, out_dir=str(out), progress=False, run_name='stage1')


@pytest.fixture(scope='module')
def two(stage1, out):
    "A two-stage run on top of `stage1`."
    return run_two_stage(stage1_run='stage1', symbols='', out_dir=str(out), strategy_epochs=1, window_days=10,
                         hidden_size=8, run_name='two', seed=0)


def copy_run(out, name, new, config=None):
    "A copy of run `name` as `new`, its `model/config.json` replaced by `config` when given."
    shutil.copytree(out / name, out / new)
    write_json(out / new / 'metadata.json', {**read_json(out / new / 'metadata.json'), 'run_name': new})
    if config is not None: write_json(out / new / 'model' / 'config.json', config)
    return out / new


def test_a_record_round_trips_and_is_the_file(stage1, out):
    record = SavedModel.read('stage1', out)
    assert SavedModel.from_dict(record.to_dict()) == record
    assert record.to_dict() == read_json(out / 'stage1' / 'model' / 'config.json')     # the file, key for key
    weights = out / 'stage1' / 'model' / 'pytorch_model.bin'
    assert (record.run_name, record.weights_sha256, record.kind) == ('stage1', sha256_file(weights), 'price')
    assert record.created_at == stage1.manager.metadata['created_at']
    assert record.feature_names == list(stage1.bundle.feature_names) and record.seq_len == 30
    assert record.flat_threshold == 0.005 and record.symbols == ['000001.SZ', '600519.SH']
    model, again = load_saved_model(stage1.manager)
    assert again == record and not model.training
    saved = torch.load(weights, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert PredictionEngine('stage1', output_dir=out).record == record
    assert {'price', 'masked', 'strategy_gru'} <= set(BUILDERS)


def test_a_file_written_before_the_record_reads_and_builds(stage1, two, out):
    "Run directories written by the release before `SavedModel` (no run_name, created_at, label) still work."
    current = read_json(out / 'stage1' / 'model' / 'config.json')
    old = {k: current[k] for k in OLD_PRICE_KEYS}
    copy_run(out, 'stage1', 'old_price', old)
    record = SavedModel.read('old_price', out)
    assert record.to_dict() == old and list(record.to_dict()) == list(OLD_PRICE_KEYS)   # nothing invented
    assert record.run_name is None and record.flat_threshold == old['flat_threshold']
    model = record.build()
    assert model.config.to_dict() == old['model']
    assert len(PredictionEngine('old_price', output_dir=out).predict()) == 2

    current = read_json(out / 'two' / 'model' / 'config.json')
    old = {k: current[k] for k in OLD_STRATEGY_KEYS}
    copy_run(out, 'two', 'old_two', old)
    record = SavedModel.read('old_two', out)
    assert record.stage1_run == 'stage1' and record.kind == 'strategy_gru'
    spec = StrategySpec.of(record)
    assert (spec.window_days, spec.hidden_size, spec.feature_kind) == (10, 8, 'pooled')
    assert {**record.to_dict(), 'adjust': None} == {**old, 'adjust': None}
    network, config = load_strategy_network('old_two', out)
    assert config['d_features'] == 16 and not network.training
    assert isinstance(open_engine('old_two', output_dir=out), StrategyEngine)


def test_tampered_weights_are_refused_naming_the_file(stage1, two, out):
    for name in ('stage1', 'two'):
        d = copy_run(out, name, f'tampered_{name}')
        weights = d / 'model' / 'pytorch_model.bin'
        state = torch.load(weights, weights_only=True)
        torch.save({k: v * 2 for k, v in state.items()}, weights)
        with pytest.raises(CheckpointError, match=re.escape(str(weights)) + ': SHA-256 differs'):
            SavedModel.read(d).build()
    state_dir = out / 'stage1' / 'checkpoints' / 'checkpoint-1'
    record = SavedModel.read('stage1', out).at_checkpoint(state_dir)          # a checkpoint: no checksum recorded
    assert record.weights_sha256 is None and record.weights_path == state_dir / 'pytorch_model.bin'
    assert not record.build().training


def test_two_stage_runs_show_predict_and_verify(two, out, capsys):
    assert cli.main(['runs', 'show', 'two', '--out_dir', str(out)]) == 0
    shown = capsys.readouterr()
    assert 'strategy_gru' in shown.out and not shown.err
    assert re.search(r'^strategy\s+-?\d', shown.out, re.M) and re.search(r'^buy_and_hold\s', shown.out, re.M)

    assert cli.main(['predict', 'two', '--out_dir', str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[:5] == ['date', 'close', 'position', 'p_position', 'expected_position']
    assert {row.split()[0] for row in lines[3:]} == {'000001.SZ', '600519.SH'}
    assert all(0 <= float(row.split()[3]) <= 1 for row in lines[3:])

    code = cli.main(['verify', 'two', '--out_dir', str(out)])
    verified = capsys.readouterr()
    assert code in (0, 1) and not verified.err
    assert 'two is a two-stage strategy run (strategy_gru)' in verified.out
    assert 'the verdict is about the backbone of its stage-1 price model, run stage1' in verified.out


def test_verify_on_a_two_stage_run_without_its_stage1_is_one_line(two, out, tmp_path, capsys):
    shutil.copytree(out / 'two', tmp_path / 'two')
    assert cli.main(['verify', 'two', '--out_dir', str(tmp_path)]) == 1
    result = capsys.readouterr()
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and "'stage1': no such run" in lines[0], result.err
    assert 'Traceback' not in result.err
