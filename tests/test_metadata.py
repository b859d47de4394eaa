"""Image + metadata inputs (`src.data.metadata`, ``--meta-cols``): the encoding from the train fold only, unseen
categories and missing values on their documented path, the fused model, and a run that trains, resumes and predicts
with TTA and out-of-fold."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from src.config import ModelConfig
from src.data.metadata import META_HIDDEN, MetaEncoder
from src.model import build_model
from src.predict import main as predict_main
from src.tools.export_digits import write_competition
from src.train import main as train_main
from tests.helpers import TINY, class_images

TABLE = pd.DataFrame(
    {
        "age": [10.0, 20.0, 30.0, 1000.0, np.nan],
        "sex": ["m", "f", "m", "x", None],  # 'x' only outside the train fold; None missing
    }
)
TRAIN = np.array([0, 1, 2])


def test_statistics_and_categories_come_from_the_train_fold_only():
    encoder = MetaEncoder.fit(TABLE, ["age", "sex"], TRAIN)
    age, sex = encoder.columns
    assert (age["mean"], age["std"]) == pytest.approx((20.0, np.std([10.0, 20.0, 30.0])))  # not the 1000
    assert sex["categories"] == ["f", "m"]  # not 'x'
    assert encoder.width == 2 + 3  # age and its missing flag; f, m and the missing flag
    features = encoder.transform(TABLE.iloc[TRAIN])
    assert features[:, 0].mean() == pytest.approx(0.0) and features[:, 0].std() == pytest.approx(1.0)


def test_an_unseen_category_encodes_as_zeros_with_a_warning_and_a_missing_value_is_imputed_and_flagged(caplog):
    encoder = MetaEncoder.fit(TABLE, ["age", "sex"], TRAIN)
    with caplog.at_level(logging.WARNING, logger="src.data.metadata"):
        features = encoder.transform(TABLE, where="test.csv")
    assert "test.csv: 1 rows of metadata column 'sex' hold categories the train fold never saw ('x')" in caplog.text
    unseen, missing = features[3], features[4]
    assert unseen[2:].tolist() == [0.0, 0.0, 0.0]  # no category, not flagged missing
    assert unseen[1] == 0.0 and unseen[0] == pytest.approx((1000 - 20) / np.std([10.0, 20.0, 30.0]))
    assert missing.tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]  # age imputed with the mean (0) and flagged; sex flagged
    again = MetaEncoder.from_dict(encoder.to_dict()).transform(TABLE)
    assert np.array_equal(again, features)  # the saved state encodes the same


def test_the_fused_model_takes_images_and_metadata_and_keeps_the_encoding_in_its_state_dict():
    encoder = MetaEncoder.fit(TABLE, ["age", "sex"], TRAIN)
    model = build_model(ModelConfig(arch="resnet18", in_chans=1, meta_features=encoder.width), 3).eval()
    model.meta.encoder = encoder
    images, meta = torch.randn(5, 1, 32, 32), torch.from_numpy(encoder.transform(TABLE))
    assert model((images, meta)).shape == (5, 3)
    assert model.forward_features((images, meta)).shape == (5, 512 + META_HIDDEN) == (5, model.num_features)
    with pytest.raises(ValueError, match="the model takes \\(images, metadata\\)"):
        model(images)
    fresh = build_model(ModelConfig(arch="resnet18", in_chans=1, meta_features=encoder.width), 3)
    fresh.load_state_dict(model.state_dict())
    assert fresh.meta.encoder.to_dict() == encoder.to_dict()
    other = torch.from_numpy(encoder.transform(TABLE.assign(age=[99.0] * 5)))
    assert not torch.allclose(model((images, meta)), model((images, other)))  # the metadata reaches the logits


@pytest.fixture(scope="module")
def competition(tmp_path_factory):
    """A tiny competition whose tables carry metadata: a number with gaps and two categories."""
    root = tmp_path_factory.mktemp("meta")
    images, labels = class_images(60, 3)
    write_competition(images, [f"c{v}" for v in labels], root, test_fraction=0.2)
    for name in ("train", "test"):
        table = pd.read_csv(root / f"{name}.csv", dtype={"id": str})
        rng = np.random.default_rng(len(table))
        table["age"] = np.where(rng.random(len(table)) < 0.2, np.nan, rng.normal(50, 10, len(table)).round())
        table["sex"] = rng.choice(["female", "male"], len(table))
        table["site"] = rng.choice(["head", "torso"], len(table))
        if name == "test":
            table.loc[0, "site"] = "palms"  # a site the train folds never saw
        table.to_csv(root / f"{name}.csv", index=False)
    return root


def test_a_run_with_metadata_trains_resumes_and_predicts_with_tta_and_oof(competition, caplog, capsys):
    root = competition
    flags = ["--train-csv", str(root / "train.csv"), "--image-dir", str(root / "train"), *TINY, "--batch-size", "8"]
    flags += ["--meta-cols", "age,sex,site", "--folds", "2", "--fold", "all", "--mixup-alpha", "0.4"]
    flags += ["--swa-start-epoch", "2", "--output-dir", str(root), "--run-name", "meta", "--data-fraction", "1"]
    assert train_main([*flags, "--epochs", "1"]) == 0
    assert train_main([*flags, "--epochs", "2"]) == 0  # continues each fold from its epoch-1 checkpoint
    saved = (root / "meta" / "fold0" / "config.yaml").read_text()
    assert "meta_features: 8" in saved  # age and its flag; female, male, flag; head, torso, flag
    test = ["--test-csv", str(root / "test.csv"), "--image-dir", str(root / "test"), "--tta", "flip"]
    with caplog.at_level(logging.WARNING, logger="src.data.metadata"):
        assert predict_main(["--run", str(root / "meta"), *test, "--output-dir", str(root / "sub")]) == 0
    assert "1 rows of metadata column 'site' hold categories the train fold never saw ('palms')" in caplog.text
    probs = pd.read_csv(root / "sub" / "test_predictions.csv")[["p_c0", "p_c1", "p_c2"]].to_numpy()
    assert len(probs) == 12 and np.allclose(probs.sum(axis=1), 1.0)
    assert predict_main(["--run", str(root / "meta"), "--oof", "--tta", "none"]) == 0
    oof = pd.read_csv(root / "meta" / "oof.csv", dtype={"id": str}).set_index("id")
    again = pd.read_csv(root / "meta" / "oof_tta-none.csv", dtype={"id": str}).set_index("id").loc[oof.index]
    columns = [c for c in oof.columns if c.startswith("p_")]
    assert np.allclose(again[columns].to_numpy(), oof[columns].to_numpy(), atol=1e-5)  # the same encoding again

    pd.read_csv(root / "test.csv").drop(columns="site").to_csv(root / "no_site.csv", index=False)
    no_site = ["--test-csv", str(root / "no_site.csv"), "--image-dir", str(root / "test")]
    capsys.readouterr()
    assert predict_main(["--run", str(root / "meta"), *no_site, "--output-dir", str(root / "bad")]) == 2
    assert "no_site.csv: no metadata column 'site' (--meta-cols)" in capsys.readouterr().err


def test_a_missing_metadata_column_is_named(competition, capsys):
    flags = ["--train-csv", str(competition / "train.csv"), "--image-dir", str(competition / "train"), *TINY]
    assert train_main([*flags, "--meta-cols", "age,weight", "--dry-run"]) == 2
    assert "train.csv: no column 'weight' for --meta-cols; its columns: id, label, age, sex, site" in (
        capsys.readouterr().err
    )
