"""The per-epoch history: round trip through history.csv, the best row in either direction."""

from src.history import History


def test_history_round_trips_and_finds_the_best(tmp_path):
    history = History(tmp_path / "history.csv")
    history.record({"epoch": 1, "valid_accuracy": 0.5, "lr": 0.001})
    history.record({"epoch": 2, "valid_accuracy": 0.9, "lr": 0.0005})
    history.record({"epoch": 3, "valid_accuracy": 0.9, "lr": 0.0001})
    reread = History(tmp_path / "history.csv")
    assert reread.rows == history.rows
    assert reread.best()["epoch"] == 2


def test_history_best_follows_the_metric_direction():
    history = History()
    for epoch, loss in enumerate([0.5, 0.3, 0.4], start=1):
        history.record({"epoch": epoch, "valid_log_loss": loss})
    assert history.best("valid_log_loss", higher_is_better=False)["epoch"] == 2
    assert history.best("valid_log_loss")["epoch"] == 1
