"""RecBole's own models resume too: a killed SASRec or GRU4Rec run, rerun, continues with the same result.
(The federated family's resume: tests/test_federated.py.)"""
import glob

import pytest

from recbole_lumos.quick_start import run
from tests.conftest import tiny_settings


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec"])
def test_killed_recbole_run_resumes_with_the_same_result(tiny_data, in_tmp, one_thread, model):
    # dropout on and several batches an epoch: the random states (dropout, shuffle) must be restored too
    settings = tiny_settings(tiny_data, epochs=5, stopping_step=100, train_batch_size=16, hidden_dropout_prob=0.5,
                             dropout_prob=0.5)
    reference = run(model, "tiny", config_dict=dict(settings))

    validations = []

    def kill_at_second_validation(epoch_idx, score):
        validations.append(epoch_idx)
        if len(validations) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(model, "tiny", config_dict=dict(settings), callback_fn=kill_at_second_validation)
    assert len(glob.glob("saved/*.resume.pth")) == 1

    validations.clear()
    resumed = run(model, "tiny", config_dict=dict(settings), callback_fn=lambda e, s: validations.append(e))
    assert validations == [1, 2, 3, 4]  # killed in epoch 1's validation: from the checkpoint of epoch 0 on
    assert resumed["test_result"] == reference["test_result"]
    assert resumed["best_valid_score"] == reference["best_valid_score"]
    assert [(e, v) for _, e, v in resumed["valid_curve"]] == [(e, v) for _, e, v in reference["valid_curve"]]
    assert resumed["wall_time_s"] >= round(resumed["valid_curve"][-1][0], 1)
    assert not glob.glob("saved/*.resume.pth")  # finished: a rerun starts afresh
