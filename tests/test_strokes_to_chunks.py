"""python -m src.tools.strokes_to_chunks: balanced, complete chunks that train as one table."""

import pandas as pd

from src.tools.strokes_to_chunks import write_chunks
from tests import helpers
from tests.helpers import load


def test_stroke_chunks_are_balanced_complete_and_trainable(tmp_path):
    folder = helpers.stroke_csvs(tmp_path, per_class=10)
    extra = pd.read_csv(folder / "cat.csv", dtype=str)
    pd.concat([extra, extra.assign(key_id=extra["key_id"] + "b")]).to_csv(folder / "cat.csv", index=False)  # 20 cats
    paths = write_chunks(str(folder / "*.csv"), tmp_path / "chunks", chunks=4, read_rows=7)
    tables = [pd.read_csv(p, dtype=str) for p in paths]
    everything = pd.concat(tables)
    assert len(paths) == 4 and len(everything) == 40 and everything["key_id"].is_unique
    for table in tables:  # each chunk: 5 cats and 2 or 3 of each 10-row class
        counts = table["word"].value_counts()
        assert counts["cat"] == 5 and set(counts[["house", "the sun"]]) <= {2, 3}
    data = load(train_csv=str(tmp_path / "chunks" / "train_k[01].csv"), label_col="word", img_size=32)
    assert len(data) == len(tables[0]) + len(tables[1]) and data.classes == ["cat", "house", "the sun"]
