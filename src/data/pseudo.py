"""Pseudo-labelling: confident test predictions join the training folds (never the validation fold).

``--pseudo-labels <run>/test_predictions.csv --pseudo-threshold 0.95 --pseudo-test-csv test.csv`` takes the
test images whose most likely class has probability >= the threshold, labelled with that class (Lee 2013,
"Pseudo-Label"; a staple of Kaggle image competitions). ``--pseudo-labels mlflow:<run-id>`` takes the
test_predictions.csv of a run shared with ``src.runs push`` (`share.resolve_run`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from src.config import DataConfig, PseudoConfig
from src.data.images import Reading
from src.data.sources import read_source
from src.inference.oof import read_predictions, rows_of
from src.targets import Task
from src.tracking import rundir, share

logger = logging.getLogger(__name__)


def pseudo_labelled(
    config: PseudoConfig, data: DataConfig, reading: Reading, task: Task, uri: str | None = None
) -> tuple[object, np.ndarray]:
    """The confident test images and their hard labels.

    Args:
        config: ``pseudo_labels`` (a prediction file of `src.predict`), ``pseudo_threshold``, ``pseudo_test_csv``
            and ``pseudo_image_dir`` (default: the training ``image_dir``).
        data: the training data source; the test table is read in the same layout.
        reading: as the training data is read (`src.data.images.Reading`).
        task: the training task; single-label only.
        uri: the tracking store of ``--pseudo-labels mlflow:<run-id>`` (the config's ``--mlflow``; None:
            MLFLOW_TRACKING_URI).

    Returns:
        An image reader of the chosen test rows and their int64 class indices (N,).

    Raises:
        ValueError: not a single-label task, no test CSV, or prediction ids missing from the test CSV.
        FileNotFoundError: the prediction file or test table does not exist, or a run id the store does not hold.
    """
    if task.kind != "single":
        raise ValueError("--pseudo-labels: supported for single-label tasks")
    if not config.pseudo_test_csv:
        raise ValueError("--pseudo-labels needs --pseudo-test-csv (the test table whose images were predicted)")
    frame, probs, _ = read_predictions(prediction_file(config.pseudo_labels, uri), task, with_targets=False)
    confident = probs.max(axis=1) >= config.pseudo_threshold
    where = f"--pseudo-labels {config.pseudo_labels} against --pseudo-test-csv {config.pseudo_test_csv}"
    images = test_images(config, data, reading, frame["id"][confident].tolist(), where)
    logger.info(
        "pseudo-labels: %d of %d test images at p >= %s join the training fold",
        len(images),
        len(frame),
        config.pseudo_threshold,
    )
    return images, probs[confident].argmax(axis=1).astype(np.int64)


def prediction_file(spec: str, uri: str | None = None) -> Path:
    """``--pseudo-labels``: a prediction file as it is, or ``mlflow:<run-id>``: the test_predictions.csv of that
    shared run, downloaded (`share.resolve_run`).

    Raises:
        ValueError, FileNotFoundError, ConnectionError: see `resolve_run`.
    """
    if not str(spec).startswith(share.SHARE_PREFIX):
        return Path(spec)
    return share.resolve_run(spec, uri) / rundir.TEST_PREDICTIONS


def test_images(config: PseudoConfig, data: DataConfig, reading: Reading, ids: list[str], where: str):
    """The images of the test rows ``ids`` (``--pseudo-test-csv``, ``--pseudo-image-dir``), read in the training
    layout, in ``ids``' order.

    Raises:
        ValueError: ids missing from the test table (``where`` names the two files).
        FileNotFoundError: the test table does not exist.
    """
    test_data = dataclasses.replace(
        data, train_csv=config.pseudo_test_csv, image_dir=config.pseudo_image_dir or data.image_dir, max_per_class=None
    )
    test = read_source(test_data, reading)
    return test.images.subset(rows_of(test.ids(), ids, where))
