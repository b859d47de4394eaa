"""Progressive resizing (--img-size-schedule): parsing, the batch shape per epoch, the CLI with resume."""

import csv
import logging

import pytest
from ignite.engine import Engine, Events

from src.config import Config, parse_size_schedule
from src.handlers import attach_progressive_resizing
from src.loaddata import build_loaders
from src.train import main
from tests.test_cli import TINY
from tests.test_loaddata import _fake_data, _split


def test_schedule_is_sorted_and_starts_at_img_size_unless_epoch_0_is_listed():
    assert parse_size_schedule("40:10,32:4", 24) == [(0, 24), (4, 32), (10, 40)]
    assert parse_size_schedule("48:0,64:2", 24) == [(0, 48), (2, 64)]
    assert parse_size_schedule(None, 32) == [(0, 32)]
    config = Config(img_size=24, img_size_schedule="32:2,40:4")
    assert [config.img_size_at(epoch) for epoch in range(6)] == [24, 24, 32, 32, 40, 40]


@pytest.mark.parametrize("text", ["32", "32:x", "4:1", "32:1,40:1", "32:-1"])
def test_bad_schedule_names_the_entry(text):
    with pytest.raises(ValueError, match="--img-size-schedule"):
        parse_size_schedule(text, 32)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batch_shape_changes_at_the_scheduled_epochs(num_workers):
    """The train batches and the evaluation batches switch size exactly at the listed epochs, also with
    worker processes (which would keep the old pipelines if they were persistent)."""
    data = _fake_data(80, shape=(20, 20))
    train_idx, valid_idx = _split(data, 4, 0)
    loaders = build_loaders(
        data, train_idx, valid_idx, img_size=16, batch_size=20, num_workers=num_workers, resizable=True
    )
    config = Config(img_size=16, img_size_schedule="24:1,12:3")
    seen: dict[int, set] = {}

    def step(engine, batch):
        seen.setdefault(engine.state.epoch, set()).add(tuple(batch[0].shape[1:]))

    trainer = Engine(step)
    attach_progressive_resizing(trainer, loaders, config.img_size_at, seed=0, logger=logging.getLogger("test"))
    valid_shapes = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda: valid_shapes.append(tuple(next(iter(loaders.valid))[0].shape[1:]))
    )
    trainer.run(loaders.train, max_epochs=4)
    expected = [(1, 16, 16), (1, 24, 24), (1, 24, 24), (1, 12, 12)]
    assert [seen[epoch] for epoch in (1, 2, 3, 4)] == [{shape} for shape in expected]
    assert valid_shapes == expected
    assert trainer.state.iteration == 4 * len(loaders.train)  # no batch lost or repeated by the restarts


def test_cli_schedule_records_the_size_and_resumes_at_the_right_size(tmp_path):
    flags = ["--output-dir", str(tmp_path), "--run-name", "prog", "--img-size-schedule", "24:0,32:1", *TINY]
    assert main([*flags, "--epochs", "1"]) == 0
    assert main(["--resume", str(tmp_path / "prog"), "--epochs", "2"]) == 0
    with (tmp_path / "prog" / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["epoch"]), int(r["img_size"])) for r in rows] == [(1, 24), (2, 32)]
    assert (tmp_path / "prog" / "checkpoint_2.pt").exists()
