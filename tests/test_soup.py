import json
import shutil

import pandas as pd
import pytest
import torch

from src.predict import main as predict_main
from src.soup import average, checkpoint_score, main
from src.tracking import rundir
from src.train import main as train_main
from tests.helpers import TINY

FLAGS = [*TINY, "--arch", "resnet18", "--epochs", "3", "--n-saved", "3", "--no-pictures", "--no-notes"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("soup")
    assert train_main([*FLAGS, "--output-dir", str(out), "--run-name", "a"]) == 0
    assert train_main([*FLAGS, "--output-dir", str(out), "--run-name", "b", "--lr", "2e-3"]) == 0
    return out


def test_average_takes_the_mean_of_float_tensors_and_keeps_the_counters():
    one = {"w": torch.tensor([1.0, 3.0]), "bn.num_batches_tracked": torch.tensor(5)}
    two = {"w": torch.tensor([3.0, 5.0]), "bn.num_batches_tracked": torch.tensor(9)}
    mean = average([one, two])
    assert mean["w"].tolist() == [2.0, 4.0] and mean["bn.num_batches_tracked"].item() == 5
    with pytest.raises(ValueError, match="different tensors"):
        average([one, {"w": torch.zeros(3), "bn.num_batches_tracked": torch.tensor(1)}])


def test_a_soup_of_one_checkpoint_is_that_checkpoint(runs, tmp_path):
    assert main([str(runs / "a"), "--k", "1", "--output", str(tmp_path / "one")]) == 0
    best = rundir.best_checkpoint(runs / "a")
    soup = rundir.best_checkpoint(tmp_path / "one")
    state, again = torch.load(best, weights_only=True), torch.load(soup, weights_only=True)
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    assert checkpoint_score(soup) == checkpoint_score(best)


def test_the_greedy_soup_never_scores_below_its_best_ingredient_and_predict_uses_it(runs, tmp_path, capsys):
    out = tmp_path / "greedy"
    assert main([str(runs / "a"), str(runs / "b"), "--k", "3", "--method", "greedy", "--output", str(out)]) == 0
    record = json.loads((out / "soup.json").read_text())
    ingredients = [(runs / "a").glob(rundir.BEST_MODELS), (runs / "b").glob(rundir.BEST_MODELS)]
    best_alone = max(checkpoint_score(p) for paths in ingredients for p in paths)
    assert record["valid_accuracy"] >= best_alone
    assert record["ingredients"][0].endswith(".pt") and len(record["ingredients"]) >= 1
    predictions = pd.read_csv(out / rundir.PREDICTIONS, dtype={"label": str})
    columns = [c for c in predictions.columns if c.startswith("p_")]
    accuracy = (predictions[columns].to_numpy().argmax(1) == predictions["label"].astype(int)).mean()
    assert accuracy == pytest.approx(record["valid_accuracy"])
    assert predict_main(["--run", str(out), "--oof"]) == 0
    assert f"OOF accuracy: {record['valid_accuracy']:.4f}" in capsys.readouterr().out


@pytest.mark.slow  # trains a 2-fold run (13 s); the suite's time is kept under 10 minutes
def test_uniform_soup_of_every_fold_writes_oof(tmp_path):
    flags = [*FLAGS, "--epochs", "2", "--folds", "2", "--fold", "all", "--output-dir", str(tmp_path)]
    assert train_main([*flags, "--run-name", "cv"]) == 0
    assert main([str(tmp_path / "cv"), "--k", "2"]) == 0
    soup = tmp_path / "cv-soup"
    assert (soup / "fold0" / "soup.json").is_file() and (soup / "fold1" / "soup.json").is_file()
    assert len(pd.read_csv(soup / rundir.OOF)) == len(pd.read_csv(tmp_path / "cv" / rundir.OOF))
    assert json.loads((soup / rundir.CV_SUMMARY).read_text())["oof_score"] is not None


def test_a_missing_run_or_another_arch_is_refused_with_one_line(runs, tmp_path, capsys):
    assert main([str(runs / "a"), str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(runs / "a", other)
    rundir.write_config(other, rundir.read_config(other).replace(arch="effnet-b0"))
    assert main([str(runs / "a"), str(other)]) == 2
    assert "soups need runs of one arch with the same folds" in capsys.readouterr().err
