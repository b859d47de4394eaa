"""The typed config: groups check their own fields, comma text becomes tuples, files with flat or grouped keys."""

import dataclasses
import re

import pytest
import yaml

from src.config import (
    EXPERIMENT,
    FOLDER_FIELDS,
    INFERRED,
    RESUMABLE,
    ROLES,
    CompetitionConfig,
    Config,
    LoaderConfig,
    ModelConfig,
    SplitConfig,
    TrackConfig,
    load_config_file,
    save_config,
)

# config.yaml as main wrote it before the groups: flat keys, comma strings, the normalisation as text.
OLD_FLAT = {
    "arch": "effnet-b0",
    "num_classes": 10,
    "in_chans": 1,
    "label_col": "grapheme_root,vowel_diacritic",
    "channels": None,
    "classes": None,
    "head_weights": "2,1",
    "mean": "0.130014",
    "std": "0.307460",
    "img_size_schedule": "24:0,32:4",
    "fold": 0,
    "accumulation_steps": 2,
    "run_name": None,
    "resume": None,
}


def test_schedule_is_sorted_and_starts_at_img_size_unless_epoch_0_is_listed():
    assert LoaderConfig(img_size=24, img_size_schedule="40:10,32:4").size_schedule == [(0, 24), (4, 32), (10, 40)]
    assert LoaderConfig(img_size=24, img_size_schedule="48:0,64:2").size_schedule == [(0, 48), (2, 64)]
    assert LoaderConfig(img_size=32).size_schedule == [(0, 32)]
    loader = LoaderConfig(img_size=24, img_size_schedule="32:2,40:4")
    assert loader.img_size_schedule == ((32, 2), (40, 4))
    assert [loader.img_size_at(epoch) for epoch in range(6)] == [24, 24, 32, 32, 40, 40]


@pytest.mark.parametrize("text", ["32", "32:x", "4:1", "32:1,40:1", "32:-1"])
def test_bad_schedule_names_the_entry(text):
    with pytest.raises(ValueError, match="--img-size-schedule"):
        LoaderConfig(img_size_schedule=text)


@pytest.mark.parametrize(
    "group,values,flag",
    [
        (ModelConfig, {"in_chans": 0}, "--in-chans 0"),
        (SplitConfig, {"folds": 3, "fold": 3}, r"--fold 3: expected 0 <= fold < folds \(3\)"),
        (LoaderConfig, {"std": "0.5,0"}, "--std"),
    ],
)
def test_each_group_checks_its_own_fields(group, values, flag):
    with pytest.raises(ValueError, match=flag):
        group(**values)


def test_saved_config_round_trips(tmp_path):
    config = Config.of(arch="effnet-b2", mixup_alpha=0.2, clip_grad_norm=1.0, in_chans=1, label_col="a,b", mean="0.5")
    save_config(config, tmp_path / "config.yaml")
    assert load_config_file(tmp_path / "config.yaml") == config
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["model"]["arch"] == "effnet-b2" and saved["data"]["label_col"] == ["a", "b"]  # one mapping per group
    assert saved["loader"]["mean"] == [0.5]  # floats, not text


def test_an_old_flat_config_file_still_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(OLD_FLAT))
    config = load_config_file(path)
    assert config.model.in_chans == 1 and config.model.num_classes == 10
    assert config.data.label_col == ("grapheme_root", "vowel_diacritic") and config.data.head_weights == (2.0, 1.0)
    assert config.loader.mean == (0.130014,) and config.loader.std == (0.30746,)
    assert config.loader.img_size_schedule == ((24, 0), (32, 4)) and config.step.accumulation_steps == 2
    assert config.flat()["arch"] == "effnet-b0"


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("arch: effnet-b0\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        load_config_file(path)
    path.write_text("optim:\n  arch: effnet-b0\n")  # a field under another group's heading
    with pytest.raises(ValueError, match="'arch' is a key of group 'model', not of 'optim'"):
        load_config_file(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lr: fast\n", "key 'lr' = 'fast': expected a number (float)"),
        ("epochs: 2.5\n", "key 'epochs' = 2.5: expected an integer"),
        ("optim:\n  scheduler: cosin\n", "key 'scheduler' = 'cosin': expected one of 'onecycle', 'cosine'"),
        ("channels_last: maybe\n", "key 'channels_last' = 'maybe': expected true or false"),
        ("batch_size: lots\n", "key 'batch_size' = 'lots': expected an integer or one of 'auto'"),
        ("fold: [1]\n", "key 'fold' = [1]: expected an integer or one of 'all'"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_the_value_and_the_type(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {expected}")):
        load_config_file(path)


def test_scalars_a_file_format_reads_as_another_type_are_taken_as_meant(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("lr: 1e-3\ncheckpoint_every: 500\nbatch_size: '64'\nweight_decay: 0\nlabel_col: 5\n")
    config = load_config_file(path)  # YAML 1.1 reads 1e-3 as text, 500 as an integer
    assert config.optim.lr == 0.001 and config.run.checkpoint_every == "500" and config.loader.batch_size == 64
    assert config.optim.weight_decay == 0.0 and config.data.label_col == ("5",)


def test_a_saved_config_cut_short_is_refused_and_names_what_it_lacks(tmp_path):
    path = tmp_path / "config.yaml"
    save_config(Config(), path)
    lines = path.read_text().splitlines(keepends=True)
    assert lines[-1] == "  list_archs: false\n"  # RunConfig's last field: keep it last (check_whole)
    path.write_text("".join(lines[: len(lines) // 3]))
    assert load_config_file(path).model.arch == "effnet-b0"  # as a --config file: the defaults fill the rest
    with pytest.raises(ValueError, match=r"cut short: it ends at line \d+ without the groups .*competition, run"):
        load_config_file(path, saved=True)
    path.write_text("".join(lines[:-1]))
    with pytest.raises(ValueError, match="without the key run.list_archs"):
        load_config_file(path, saved=True)
    path.write_text(yaml.safe_dump(OLD_FLAT))  # flat keys, written before the groups: nothing to check
    assert load_config_file(path, saved=True).model.arch == "effnet-b0"


def test_replace_changes_fields_by_their_flat_names_and_checks_them():
    config = Config().replace(lr=0.1, fold=2, arch="resnet18")
    assert (config.optim.lr, config.split.fold, config.model.arch) == (0.1, 2, "resnet18")
    assert Config().optim.lr == 4e-3  # a copy
    with pytest.raises(ValueError, match="--fold 9"):
        Config().replace(fold=9)
    with pytest.raises(ValueError, match="unknown config key 'nope'"):
        Config().replace(nope=1)


def test_class_list_from_a_file_or_commas(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\nthe sun\n\n")
    assert Config.of(classes=str(tmp_path / "classes.txt")).data.classes == ("cat", "the sun")
    assert Config.of(classes="a, b").data.classes == ("a", "b")
    assert dataclasses.replace(Config().data, label_col=["x"]).label_col == ("x",)


def test_what_a_field_is_to_a_run_is_declared_with_the_field_and_the_rules_follow():
    for group in (TrackConfig, CompetitionConfig):  # their doc strings: none of their fields changes the training
        assert [f.name for f in dataclasses.fields(group) if ROLES[f.name].trains] == []
    assert {name for name in RESUMABLE if ROLES[name].trains} == {"epochs"}  # a run goes on for more epochs
    assert RESUMABLE == {name for name, role in ROLES.items() if not role.trains} | {"epochs"}
    assert FOLDER_FIELDS <= RESUMABLE - EXPERIMENT  # the folder's name: no setting, never compared
    assert INFERRED.isdisjoint(RESUMABLE | EXPERIMENT) and all(Config().flat()[name] is None for name in INFERRED)
    assert EXPERIMENT == set(Config().flat()) - {name for name, role in ROLES.items() if not role.trains} - INFERRED
