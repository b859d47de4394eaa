import json

import numpy as np
import pytest

from src.config import Config
from src.data import distill
from src.inference.oof import predictions_frame
from src.targets import Head, Task
from src.tools.export_digits import write_image_folder
from src.training.assembly import setup_data, setup_loaders
from tests import helpers
from tests.helpers import CPU


def _teacher(folder, ids, probs, task, name="oof.csv"):
    folder.mkdir(parents=True, exist_ok=True)
    predictions_frame(list(ids), probs, task).to_csv(folder / name, index=False)
    return folder


def test_soften_and_mix_per_task_kind():
    single = Task("single", (Head("label", ("a", "b", "c")),))
    probs = np.array([[0.7, 0.2, 0.1]])
    assert np.allclose(distill.soften(probs, single, 1.0), probs, atol=1e-6)
    hot = distill.soften(probs, single, 2.0)
    assert np.isclose(hot.sum(), 1.0) and hot[0, 0] < 0.7 and hot[0, 2] > 0.1  # T > 1 flattens
    assert np.allclose(hot, np.sqrt(probs) / np.sqrt(probs).sum())

    heads = Task("multihead", (Head("x", ("a", "b")), Head("y", ("p", "q", "r"))))
    soft = distill.soften(np.array([[0.9, 0.1, 0.2, 0.3, 0.5]]), heads, 3.0)
    assert np.allclose([soft[0, :2].sum(), soft[0, 2:].sum()], 1.0)
    assert distill.hard_targets(np.array([[1, 2]]), heads).tolist() == [[0, 1, 0, 0, 1]]

    tags = Task("multilabel", (Head("tags", ("haze", "road")),))
    soft = distill.soften(np.array([[0.9, 0.5]]), tags, 2.0)
    assert 0.5 < soft[0, 0] < 0.9 and np.isclose(soft[0, 1], 0.5)  # each tag on its own
    mixed = distill.mix(distill.hard_targets(np.array([[1.0, 0.0]]), tags), soft, 0.25)
    assert np.allclose(mixed, 0.25 * soft + 0.75 * np.array([[1.0, 0.0]]))


def test_training_rows_learn_their_own_out_of_fold_prediction_and_the_valid_fold_s_is_never_read(tmp_path):
    csv, folder = helpers.image_folder(tmp_path, n=24, num_classes=3)
    flags = dict(train_csv=str(csv), image_dir=str(folder), batch_size=4, train_eval_size=4, img_size=16)
    data, fold_of = setup_data(Config.of(**flags))
    ids, labels = data.source.ids(), data.targets
    probs = np.eye(3)[(labels + 1) % 3] * 0.8 + 0.2 / 3  # a teacher that says "the next class" for every row
    probs[fold_of == 0] = np.nan  # the valid fold's predictions: a leak would carry NaN into training
    teacher = _teacher(tmp_path / "teacher", ids, probs, data.task)
    config = Config.of(**flags, teacher=str(teacher), teacher_weight=0.75, teacher_temperature=1.0)
    loaders = setup_loaders(config, data, fold_of, CPU)
    train = loaders.train.dataset
    assert np.isfinite(train.targets).all() and train.targets.shape == (int((fold_of != 0).sum()), 3)
    rows = np.flatnonzero(fold_of != 0)
    expected = 0.75 * distill.soften(probs[rows], data.task, 1.0) + 0.25 * np.eye(3)[labels[rows]]
    assert np.allclose(train.targets, expected, atol=1e-6)
    assert loaders.valid.dataset.targets.dtype == np.int64  # the valid fold keeps its labels


def test_teacher_test_images_join_with_the_teacher_s_test_predictions(tmp_path):
    csv, folder = helpers.image_folder(tmp_path, n=24, num_classes=3)
    images, _ = helpers.class_images(6, 3, seed=1)
    test_csv = write_image_folder(images, None, tmp_path, name="test", ids=[f"t{i}" for i in range(6)])
    flags = dict(train_csv=str(csv), image_dir=str(folder), batch_size=4, train_eval_size=4, img_size=16)
    data, fold_of = setup_data(Config.of(**flags))
    teacher = _teacher(tmp_path / "teacher", data.source.ids(), np.full((24, 3), 1 / 3), data.task)
    test_probs = np.eye(3)[[0, 1, 2, 0, 1, 2]] * 0.9 + 0.1 / 3
    _teacher(teacher, [f"t{i}" for i in range(6)], test_probs, data.task, name="test_predictions.csv")
    teach = dict(teacher=str(teacher), teacher_test=True, pseudo_test_csv=str(test_csv))
    config = Config.of(**flags, **teach, pseudo_image_dir=str(tmp_path / "test"), teacher_weight=0.0)
    train = setup_loaders(config, data, fold_of, CPU).train.dataset
    rows = int((fold_of != 0).sum())
    assert len(train) == rows + 6 and np.allclose(train.targets[rows:], test_probs, atol=1e-6)
    assert np.array_equal(train.targets[:rows], np.eye(3)[data.targets[fold_of != 0]])  # weight 0: the labels
    with pytest.raises(ValueError, match="--teacher-test needs --pseudo-test-csv"):
        setup_loaders(Config.of(**flags, teacher=str(teacher), teacher_test=True), data, fold_of, CPU)
    with pytest.raises(ValueError, match="--teacher-test needs --teacher"):
        setup_loaders(Config.of(**flags, teacher_test=True), data, fold_of, CPU)


def test_a_teacher_without_oof_or_missing_rows_is_refused(tmp_path):
    csv, folder = helpers.image_folder(tmp_path, n=24, num_classes=3)
    flags = dict(train_csv=str(csv), image_dir=str(folder), batch_size=4, train_eval_size=4, img_size=16)
    data, fold_of = setup_data(Config.of(**flags))
    with pytest.raises(FileNotFoundError, match="no oof.csv \\(written by a --fold all run or src.ensemble\\)"):
        setup_loaders(Config.of(**flags, teacher=str(tmp_path / "none")), data, fold_of, CPU)
    teacher = _teacher(tmp_path / "teacher", data.source.ids()[:10], np.full((10, 3), 1 / 3), data.task)
    with pytest.raises(ValueError, match="training rows: ids"):
        setup_loaders(Config.of(**flags, teacher=str(teacher)), data, fold_of, CPU)
    other = Task("single", (Head("label", ("x", "y", "z")),))
    teacher = _teacher(tmp_path / "other", data.source.ids(), np.full((24, 3), 1 / 3), other)
    with pytest.raises(ValueError, match="p_c0"):
        setup_loaders(Config.of(**flags, teacher=str(teacher)), data, fold_of, CPU)


def test_a_teacher_on_other_folds_is_refused_by_name_unless_allowed(tmp_path, caplog):
    """A teacher whose OOF predictions come from other folds trained on this run's valid rows: refused with the
    count and the first ids; --allow-different-folds trains with it and warns."""
    csv, folder = helpers.image_folder(tmp_path, n=24, num_classes=3)
    flags = dict(train_csv=str(csv), image_dir=str(folder), batch_size=4, train_eval_size=4, img_size=16)
    data, fold_of = setup_data(Config.of(**flags))
    ids, probs = data.source.ids(), np.full((24, 3), 1 / 3)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    other = fold_of.copy()
    other[[0, 1]] = (fold_of[[0, 1]] + 1) % 5  # two rows in another fold
    predictions_frame(list(ids), probs, data.task, folds=other).to_csv(teacher / "oof.csv", index=False)
    config = Config.of(**flags, teacher=str(teacher))
    with pytest.raises(ValueError, match=rf"its folds differ from this run's on 2 of 24 rows \({ids[0]}, {ids[1]}\)"):
        setup_loaders(config, data, fold_of, CPU)
    allowed = setup_loaders(config.replace(allow_different_folds=True), data, fold_of, CPU)
    assert len(allowed.train.dataset) == int((fold_of != 0).sum()) and "not comparable" in caplog.text
    same = tmp_path / "same"
    same.mkdir()
    predictions_frame(list(ids), probs, data.task, folds=fold_of).to_csv(same / "oof.csv", index=False)
    setup_loaders(Config.of(**flags, teacher=str(same)), data, fold_of, CPU)  # its own folds: no question


def test_a_teacher_of_another_label_encoding_is_refused_by_its_first_differing_class(tmp_path):
    """A teacher whose classes.json lists the classes in another order: one line naming it and the first class that
    differs, whatever --allow-different-folds says; the same encoding trains."""
    csv, folder = helpers.image_folder(tmp_path, n=24, num_classes=3)
    flags = dict(train_csv=str(csv), image_dir=str(folder), batch_size=4, train_eval_size=4, img_size=16)
    data, fold_of = setup_data(Config.of(**flags))
    teacher = _teacher(tmp_path / "teacher", data.source.ids(), np.full((24, 3), 1 / 3), data.task)
    swapped = Task("single", (Head("label", ("c0", "c2", "c1")),))
    (teacher / "classes.json").write_text(json.dumps(swapped.to_dict()))
    config = Config.of(**flags, teacher=str(teacher), allow_different_folds=True)
    with pytest.raises(ValueError, match=rf"--teacher {teacher}: its class list differs from this run's "
                                         rf"\(class 1 of label: 'c1' here, 'c2' in {teacher}\)"):
        setup_loaders(config, data, fold_of, CPU)
    (teacher / "classes.json").write_text(json.dumps(data.task.to_dict()))
    setup_loaders(config, data, fold_of, CPU)
