"""Run parameters are declared once (quantnb.train.params): the zoo's names, the notebook's cell, the dataclasses."""
import dataclasses, json


from quantnb.core import PACKAGE_DIR
from quantnb.models.core import list_models
from quantnb.train.params import (MODEL_NAMES, PARAMETERS, PRUNE_PARAMS, RUN_PARAMS, TRAIN_PARAMS, TWO_STAGE_PARAMS,
                                  notebook_params, parameter_cell)


def test_model_names_are_the_zoo_the_baselines_and_two_stage():
    from quantnb.models.baselines import BASELINE_MODELS
    assert sorted(MODEL_NAMES) == list_models()
    assert set(notebook_params()['model'].choices) == set(list_models()) | set(BASELINE_MODELS) | {'two_stage'}


def test_the_notebook_parameter_cell_is_the_rendered_declarations():
    nb = json.loads((PACKAGE_DIR / 'notebooks' / 'train.ipynb').read_text())
    (cell,) = [c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    source = cell['source'] if isinstance(cell['source'], str) else ''.join(cell['source'])
    assert source == parameter_cell()


def test_the_dataclasses_come_from_the_declarations():
    from quantnb.prune.structured import PruneParams
    from quantnb.strategy.two_stage import TwoStageParams
    from quantnb.train.pipeline import TrainParams
    names = lambda cls: [f.name for f in dataclasses.fields(cls)]
    assert names(TrainParams) == [p.name for p in RUN_PARAMS + TRAIN_PARAMS]
    assert names(PruneParams) == names(TrainParams) + [p.name for p in PRUNE_PARAMS]
    assert set(names(TwoStageParams)) == {p.name for p in RUN_PARAMS + TWO_STAGE_PARAMS}
    assert issubclass(PruneParams, TrainParams) and PruneParams().prune == 'imp'
    assert TwoStageParams.from_notebook({'stage1_model': 'gru', 'strategy_dropout': 0.2}).dropout == 0.2
    assert set(PARAMETERS) == {p.key for p in RUN_PARAMS + TRAIN_PARAMS + PRUNE_PARAMS + TWO_STAGE_PARAMS}


def test_a_new_kind_of_run_needs_only_a_subclass(tmp_path):
    from quantnb.experiments import make_run
    from quantnb.train.pipeline import RUN_KINDS, TrainingRun, register_run
    try:
        @register_run('shuffled', 'task', lambda v: v == 'classification')
        class Classifier(TrainingRun):
            description, selected_by = 'a classification run', 'task=classification'
        run = make_run({'model': 'gru', 'task': 'classification'})
        assert type(run) is Classifier and run.params.task == 'classification'
    finally:
        RUN_KINDS.pop('shuffled', None)
    assert type(make_run({'model': 'gru', 'task': 'classification'})) is TrainingRun
