"""Tests of fusionnet_keras.training.config and config_files: defaults, TOML layering, --set overrides, validation."""

import json

import pytest

from fusionnet_keras.training import config as cfg
from fusionnet_keras.training import config_files
from fusionnet_keras.errors import FusionNetError


def _write(path, text):
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------
# defaults


def test_defaults_are_the_papers_protocol():
    c = config_files.load_config()
    assert c["model"]["architecture"] == "fusionnet"
    assert c["model"]["nb_filters"] == 64
    assert c["model"]["depth"] == 4
    assert c["train"]["learning_rate"] == pytest.approx(2e-4)
    assert c["train"]["loss"] == "mae"
    assert c["train"]["pad"] == 64
    assert c["train"]["enrich"] is True
    assert c["augment"]["noise_sigma"] == pytest.approx(0.1)
    assert c["augment"]["elastic_grid"] == 12
    assert c["predict"]["pad"] == 64
    assert c["predict"]["tta"] == 8
    # 512 px sections + 2 * 64 mirror padding = 640, divisible by 2**4
    assert (512 + 2 * c["train"]["pad"]) % 2 ** c["model"]["depth"] == 0


def test_defaults_validate_and_are_fresh_copies():
    a = cfg.defaults()
    assert cfg.validate(a) == a
    a["train"]["epochs"] = 1
    assert cfg.defaults()["train"]["epochs"] != 1


# ---------------------------------------------------------------------------
# TOML files


def test_toml_overrides_only_what_it_lists(tmp_path):
    f = _write(tmp_path / "exp.toml", 'name = "exp"\n[train]\nepochs = 5\nlearning_rate = 1e-3\n')
    c = config_files.load_config([f])
    assert c["name"] == "exp"
    assert c["train"]["epochs"] == 5
    assert c["train"]["learning_rate"] == pytest.approx(1e-3)
    assert config_files.diff(cfg.defaults(), c) == ["name", "train.epochs", "train.learning_rate"]


def test_later_files_override_earlier(tmp_path):
    a = _write(tmp_path / "a.toml", "[train]\nepochs = 5\nbatch_size = 2\n[model]\ndepth = 3\n")
    b = _write(tmp_path / "b.toml", "[train]\nepochs = 7\n")
    c = config_files.load_config([a, b])
    assert c["train"]["epochs"] == 7  # b wins
    assert c["train"]["batch_size"] == 2  # only in a: kept
    assert c["model"]["depth"] == 3
    assert config_files.load_config([b, a])["train"]["epochs"] == 5
    # --set comes after every file
    assert config_files.load_config([a, b], ["train.epochs=9"])["train"]["epochs"] == 9


def test_integer_for_float_key_is_accepted(tmp_path):
    f = _write(tmp_path / "a.toml", "[train]\nlr_decay = 1\n")
    c = config_files.load_config([f])
    assert c["train"]["lr_decay"] == 1.0 and isinstance(c["train"]["lr_decay"], float)


def test_invalid_toml_is_an_error(tmp_path):
    f = _write(tmp_path / "bad.toml", "[train\nepochs = = 5\n")
    with pytest.raises(FusionNetError, match="invalid TOML") as e:
        config_files.load_config([f])
    assert "bad.toml" in str(e.value)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(FusionNetError, match="not found"):
        config_files.load_config([tmp_path / "nope.toml"])


@pytest.mark.parametrize(
    "text, key",
    [
        ("epochs = 5\n", "epochs"),  # a train key at the top level
        ("[train]\nepoch = 5\n", "train.epoch"),
        ("[trainer]\nepochs = 5\n", "trainer"),
        ("[model]\nfilters = 8\n", "model.filters"),
    ],
)
def test_unknown_keys_in_files_are_refused(tmp_path, text, key):
    f = _write(tmp_path / "x.toml", text)
    with pytest.raises(FusionNetError, match="unknown config key") as e:
        config_files.load_config([f])
    assert repr(key) in str(e.value)
    assert "x.toml" in str(e.value)


def test_section_given_as_a_value_is_refused(tmp_path):
    f = _write(tmp_path / "x.toml", "train = 5\n")
    with pytest.raises(FusionNetError, match="'train'"):
        config_files.load_config([f])


# ---------------------------------------------------------------------------
# --set


@pytest.mark.parametrize(
    "text, section, key, value",
    [
        ("train.epochs=5", "train", "epochs", 5),
        ("train.epochs = 12", "train", "epochs", 12),
        ("train.learning_rate=1e-3", "train", "learning_rate", 1e-3),
        ("train.learning_rate=0.5", "train", "learning_rate", 0.5),
        ("train.learning_rate=1", "train", "learning_rate", 1.0),
        ("augment.noise_sigma=0", "augment", "noise_sigma", 0.0),
        ("train.loss=mse", "train", "loss", "mse"),
        ('train.loss="mse"', "train", "loss", "mse"),
        ("train.tensorboard=false", "train", "tensorboard", False),
        ("model.architecture=unet", "model", "architecture", "unet"),
        ("data.images=/abs/path/with spaces/x.tif", "data", "images", "/abs/path/with spaces/x.tif"),
        ('data.images="C:\\\\data\\\\x.tif"', "data", "images", "C:\\data\\x.tif"),
        ("data.labels=labels.h5:stack/gt", "data", "labels", "labels.h5:stack/gt"),
        ("data.train_sections=1-20", "data", "train_sections", "1-20"),
        ("data.train_sections=1-10,15", "data", "train_sections", "1-10,15"),
        ('data.val_sections=""', "data", "val_sections", ""),
        ("data.val_sections=", "data", "val_sections", ""),
        # a string key given something that looks like a number or a date stays a string
        ("data.val_sections=30", "data", "val_sections", "30"),
        ("data.val_sections=21", "data", "val_sections", "21"),
    ],
)
def test_set_parsing(text, section, key, value):
    c = config_files.load_config([], [text])
    got = c[section][key]
    assert got == value
    assert type(got) is type(value)


def test_set_top_level_strings():
    assert config_files.load_config([], ["name=my-run"])["name"] == "my-run"
    assert config_files.load_config([], ['name="my run"'])["name"] == "my run"
    assert config_files.load_config([], ["name=2024"])["name"] == "2024"
    assert config_files.load_config([], ["name=2024-01-31"])["name"] == "2024-01-31"


def test_set_later_overrides_win():
    c = config_files.load_config([], ["train.epochs=5", "train.epochs=6"])
    assert c["train"]["epochs"] == 6


def test_parse_override_nests_keys():
    assert cfg.parse_override("train.epochs=5") == {"train": {"epochs": 5}}
    assert cfg.parse_override("name=x") == {"name": "x"}


def test_set_without_equals_is_an_error():
    with pytest.raises(FusionNetError, match="key=value"):
        config_files.load_config([], ["train.epochs"])


@pytest.mark.parametrize(
    "text, key",
    [
        ("epochs=5", "epochs"),
        ("nmae=x", "nmae"),
        ("train.epoch=5", "train.epoch"),
        ("model.nb_filter=8", "model.nb_filter"),
        ("optim.lr=1", "optim"),
        ("train.foo.bar=1", "train.foo"),
    ],
)
def test_set_unknown_key_is_refused(text, key):
    with pytest.raises(FusionNetError, match="unknown config key") as e:
        config_files.load_config([], [text])
    assert repr(key) in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "text, key",
    [
        # wrong type
        ("train.epochs=five", "train.epochs"),
        ("train.epochs=2.5", "train.epochs"),
        ("train.epochs=true", "train.epochs"),
        ("train.learning_rate=fast", "train.learning_rate"),
        ("train.learning_rate=true", "train.learning_rate"),
        ("train.tensorboard=yes", "train.tensorboard"),
        ("train.tensorboard=1", "train.tensorboard"),
        ("train.epochs.x=1", "train.epochs"),
        ("train=5", "train"),
        # out of range
        ("train.epochs=0", "train.epochs"),
        ("model.depth=9", "model.depth"),
        ("model.depth=-1", "model.depth"),
        ("model.nb_filters=0", "model.nb_filters"),
        ("train.learning_rate=-1e-3", "train.learning_rate"),
        ("train.lr_decay=1.5", "train.lr_decay"),
        ("predict.tta=9", "predict.tta"),
        ("train.pad=-1", "train.pad"),
        # bad choice
        ("train.loss=hinge", "train.loss"),
        ("model.architecture=resnet", "model.architecture"),
    ],
)
def test_bad_values_name_the_key(text, key):
    with pytest.raises(FusionNetError) as e:
        config_files.load_config([], [text])
    msg = str(e.value)
    assert repr(key) in msg
    assert "\n" not in msg


def test_bad_value_in_file_names_the_key(tmp_path):
    f = _write(tmp_path / "x.toml", '[train]\nloss = "hinge"\n')
    with pytest.raises(FusionNetError, match="'train.loss'") as e:
        config_files.load_config([f])
    assert "mae" in str(e.value) and "mse" in str(e.value)


def test_crop_plus_pad_must_be_divisible_by_two_to_the_depth():
    with pytest.raises(FusionNetError, match="train.crop"):
        config_files.load_config([], ["model.depth=2", "train.crop=30", "train.pad=16"])
    c = config_files.load_config([], ["model.depth=2", "train.crop=32", "train.pad=16"])
    assert c["train"]["crop"] == 32


def test_units_only_for_fusionnet_w():
    with pytest.raises(FusionNetError, match="model.units"):
        config_files.load_config([], ["model.units=2"])
    c = config_files.load_config([], ["model.architecture=fusionnet_w", "model.units=3"])
    kw = cfg.model_kwargs(c)
    assert (kw["nb_filters"], kw["depth"], kw["units"]) == (64, 4, 3)
    kw = cfg.model_kwargs(cfg.defaults())
    assert (kw["nb_filters"], kw["depth"]) == (64, 4) and "units" not in kw


def test_zero_init_residual_reaches_fusionnets_only():
    c = config_files.load_config([], ["model.zero_init_residual=true"])
    assert cfg.model_kwargs(c)["zero_init_residual"] is True
    assert cfg.model_kwargs(cfg.defaults())["zero_init_residual"] is False
    # the shared CPU preset also builds the U-Net, which has no residual blocks
    c = config_files.load_config([], ["model.architecture=unet", "model.zero_init_residual=true"])
    assert "zero_init_residual" not in cfg.model_kwargs(c)
    with pytest.raises(FusionNetError, match="model.zero_init_residual"):
        config_files.load_config([], ["model.zero_init_residual=3"])


# ---------------------------------------------------------------------------
# config.json, validate, diff


def test_save_and_read_round_trip(tmp_path):
    c = config_files.load_config([], ["name=rt", "train.epochs=3", "model.depth=2", "data.val_sections="])
    path = tmp_path / "sub" / "config.json"
    path.parent.mkdir()
    config_files.save_config(c, path)
    assert json.loads(path.read_text()) == c
    back = config_files.read_config_json(path)
    assert back == c
    assert config_files.diff(back, c) == []
    assert isinstance(back["train"]["learning_rate"], float)
    # no temporary files left next to it
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]


def test_read_config_json_errors(tmp_path):
    with pytest.raises(FusionNetError, match="not found"):
        config_files.read_config_json(tmp_path / "config.json")
    bad = _write(tmp_path / "bad.json", "{not json")
    with pytest.raises(FusionNetError, match="invalid JSON"):
        config_files.read_config_json(bad)
    c = cfg.defaults()
    c["train"]["warmup"] = 3
    unknown = _write(tmp_path / "unknown.json", json.dumps(c))
    with pytest.raises(FusionNetError, match="'train.warmup'"):
        config_files.read_config_json(unknown)
    c = cfg.defaults()
    del c["augment"]
    partial = _write(tmp_path / "partial.json", json.dumps(c))
    with pytest.raises(FusionNetError, match="augment"):
        config_files.read_config_json(partial)


def test_validate_does_not_modify_its_argument():
    c = cfg.defaults()
    c["train"]["lr_decay"] = 1
    checked = cfg.validate(c)
    assert checked["train"]["lr_decay"] == 1.0 and isinstance(checked["train"]["lr_decay"], float)
    assert c["train"]["lr_decay"] == 1 and isinstance(c["train"]["lr_decay"], int)


def test_diff_lists_changed_keys():
    a = cfg.defaults()
    b = config_files.load_config([], ["train.epochs=3", "model.depth=2", "name=other"])
    assert config_files.diff(a, b) == ["model.depth", "name", "train.epochs"]
    assert config_files.diff(b, a) == ["model.depth", "name", "train.epochs"]
    assert config_files.diff(a, cfg.defaults()) == []
    # keys present on one side only count as different
    assert config_files.diff({"x": {"y": 1}}, {"x": {}}) == ["x.y"]
    assert config_files.diff({"x": 1}, {"x": {"y": 1}}) == ["x"]


# ---------------------------------------------------------------------------
# the values the papers do not state are labelled wherever they are shown


def test_settings_not_in_the_paper_are_labelled_in_the_paper_presets():
    from conftest import REPO

    label = cfg.NOT_IN_PAPER_LABEL
    for experiment in ("isbi2012", "zebrafish"):
        lines = (REPO / "experiments" / experiment / "paper.toml").read_text().splitlines()
        for setting, _reason in cfg.FAMILIES["membranes"].not_in_paper:
            # the line naming the setting (or a description of it) carries the label, with a reason after it
            named = [i for i, line in enumerate(lines) if setting in line]
            assert named, (experiment, setting)
            assert any(label in " ".join(lines[i:i + 2]) for i in named), (experiment, setting)


def test_settings_not_in_the_paper_are_labelled_in_the_docs_and_reports():
    from conftest import REPO
    from fusionnet_keras.experiments.common import preset_note

    page = (REPO / "docs" / "experiments" / "index.md").read_text()
    table = page[page.index("## Settings not stated in the papers"):]
    table = table[: table.index("\n#")] if "\n#" in table else table
    for setting, _reason in cfg.FAMILIES["membranes"].not_in_paper:
        assert f"| `{setting}`" in table or f"| {setting}" in table, setting
    for doc in (REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))):
        text = doc.read_text()
        assert "the paper's protocol (GPU)" not in text and "which are the paper's protocol" not in text, doc
    note = "\n".join(preset_note("paper", "isbi2012", cfg.defaults()))
    assert f"**{cfg.NOT_IN_PAPER_LABEL}**" in note
    for setting, reason in cfg.FAMILIES["membranes"].not_in_paper:
        assert setting in note and reason in note
    assert "train.lr_decay = 0.99" in note and "train.epochs = 500" in note and "augment.noise_sigma = 0.1" in note


def test_unit_schedule_default_is_the_papers():
    c = config_files.load_config([], ["model.architecture=fusionnet_w", "model.units=2"])
    assert c["train"]["unit_schedule"] == "units"
    assert config_files.load_config([], ["train.unit_schedule=joint"])["train"]["unit_schedule"] == "joint"
    with pytest.raises(FusionNetError, match="train.unit_schedule"):
        config_files.load_config([], ["train.unit_schedule=sequential"])
    with pytest.raises(FusionNetError, match="train.unit_epochs"):  # the earlier, non-paper schedule is gone
        config_files.load_config([], ["train.unit_epochs=2"])


# ---------------------------------------------------------------------------
# one schema, a section per architecture family


def test_each_family_composes_the_common_keys_with_its_own_section():
    from fusionnet_keras.training.schema import defaults as schema_defaults

    def keys(schema, prefix=""):
        out = set()
        for key, spec in schema.items():
            out |= keys(spec, f"{prefix}{key}.") if isinstance(spec, dict) else {prefix + key}
        return out

    def leaves(table):
        for value in table.values():
            yield from leaves(value) if type(value) is dict else [value]

    common = keys(cfg.COMMON)
    for fam in cfg.FAMILIES.values():
        schema = fam.schema
        assert common <= keys(schema), fam.name
        assert keys(fam.section) <= keys(schema)
        assert not any(isinstance(v, cfg.PerFamily) for v in leaves(schema_defaults(schema)))  # all chosen
        for arch in fam.architectures:
            assert cfg.family(arch) is fam and cfg.defaults(arch)["model"]["architecture"] == arch
        first = fam.architectures[0]  # the family's default (fusionnet3d's sizes need another input shape)
        assert cfg.validate(cfg.defaults(first)) == cfg.defaults(first) == schema_defaults(schema)
    assert cfg.family(cfg.defaults()).name == "membranes" and cfg.family("unet3d").volumetric
    # keys of one family are unknown to the other
    with pytest.raises(FusionNetError, match="unknown config key 'train.input_shape'"):
        config_files.load_config([], ["train.input_shape=[16,114,114]"])
    with pytest.raises(FusionNetError, match="unknown config key 'train.crop'"):
        config_files.load_config([], ["model.architecture=unet3d", "train.crop=64"])
    with pytest.raises(FusionNetError, match="'model.architecture' must be one of fusionnet, fusionnet_w, unet, "
                                             "unet3d, fusionnet3d, got 'vnet'"):
        cfg.validate({**cfg.defaults(), "model": {**cfg.defaults()["model"], "architecture": "vnet"}})


@pytest.mark.parametrize("name", ["fusionnet_w2", "fusionnet3d_malis"])
def test_config_json_saved_by_0_1_0_reads_back_unchanged(name):
    """config.json of runs trained by 0.1.0 (tests/fixtures/configs-0.1.0, written by the twin schemas),
    2-D with ``train.precision = "mixed_bfloat16"`` and 3-D with ``predict.precision = "auto"``: read back
    unchanged but for the keys added since, at their defaults (the 3-D ``model.offsets``: the nearest
    neighbours), so such runs resume; the experiment presets still give the same configuration."""
    from conftest import REPO

    path = REPO / "tests" / "fixtures" / "configs-0.1.0" / f"{name}.json"
    saved = json.loads(path.read_text())
    added = {"offsets": []} if name.endswith("malis") else {}
    assert config_files.read_config_json(path) == {**saved, "model": {**saved["model"], **added}}
    saved = config_files.read_config_json(path)  # what a resume compares with
    experiment = "affinity3d" if name.endswith("malis") else "isbi2012"
    folder = REPO / "experiments" / experiment
    preset = [folder / f"{name}.toml", folder / "cpu.toml", folder / f"{name}.cpu.toml"]
    overrides = ["predict.precision=auto"] if experiment == "affinity3d" else ["train.precision=mixed_bfloat16"]
    assert config_files.diff(config_files.load_config([p for p in preset if p.exists()], overrides), saved) == []


@pytest.mark.parametrize("architecture", ["fusionnet", "unet3d"])
def test_one_precision_vocabulary_for_training_and_prediction(architecture):
    """train.precision and predict.precision accept the same words in every family, ``auto`` included
    (the 3-D trainer too), as --precision does; anything else is refused naming the key."""
    from fusionnet_keras.settings import PRECISION_WORDS

    assert set(PRECISION_WORDS) == {"float32", "bfloat16", "float16", "auto", "mixed_bfloat16", "mixed_float16"}
    for word in PRECISION_WORDS:
        c = config_files.load_config([], [f"model.architecture={architecture}", f"train.precision={word}",
                                 f"predict.precision={word}"])
        assert c["train"]["precision"] == c["predict"]["precision"] == word
    for key in ("train.precision", "predict.precision"):
        with pytest.raises(FusionNetError, match=f"'{key}' must be one of float32, bfloat16"):
            config_files.load_config([], [f"model.architecture={architecture}", f"{key}=float8"])
