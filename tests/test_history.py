"""The per-epoch history: round trip through history.csv, the best row in either direction."""

from src.tracking.history import History


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


def test_the_steady_pace_leaves_out_the_first_iterations_and_the_evaluations():
    from ignite.engine import Engine, Events

    from src.tracking.history import SteadyPace

    clock = {"now": 0.0}

    def step(engine, batch):
        clock["now"] += 5.0 if engine.state.iteration % 40 == 1 else 1.0  # each epoch's first iteration: start-up

    def evaluate(engine, batch):  # 30 s of validation in the middle of each epoch, as ignite times it
        clock["now"] += 30.0

    trainer, evaluator = Engine(step), Engine(evaluate)
    evaluator.add_event_handler(Events.COMPLETED, lambda e: e.state.times.update(COMPLETED=30.0))
    pace = SteadyPace(trainer, {"valid": evaluator})
    pace._now = lambda: clock["now"]
    paces = []
    middle = Events.ITERATION_COMPLETED(event_filter=lambda engine, iteration: iteration % 40 == 20)
    trainer.add_event_handler(middle, lambda: evaluator.run([0]))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: paces.append(pace.images_per_s(8)))
    trainer.run(range(40), max_epochs=2)
    assert paces == [8.0, 8.0]  # 8 images per 1 s iteration: neither the 5 s first steps nor the 30 s count
    short = Engine(lambda engine, batch: None)
    pace = SteadyPace(short, {})
    short.add_event_handler(Events.EPOCH_COMPLETED, lambda: paces.append(pace.images_per_s(8)))
    short.run([0], max_epochs=1)
    assert paces[-1] is None  # one iteration: nothing left to measure
