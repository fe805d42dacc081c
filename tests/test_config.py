"""SearchConfig: presets, validation, JSON/YAML round trip, precedence."""

import json
import re

import pytest

from tfvnas import config as config_lib
from tfvnas.layers import registry as op_registry


def test_paper_preset_is_darts_scale():
    cfg = config_lib.preset("paper")
    assert (cfg.layers, cfg.channels, cfg.epochs, cfg.batch_size) == (8, 16, 50, 64)
    assert cfg.optimization == "bilevel" and cfg.threshold == 3.0


def test_every_preset_validates_and_names_ops():
    for name in config_lib.PRESETS:
        cfg = config_lib.preset(name)
        assert cfg.op_names == op_registry.OP_SETS["darts"]
        assert config_lib.SearchConfig.from_dict(cfg.to_dict()) == cfg


def test_json_and_yaml_files_round_trip(tmp_path):
    cfg = config_lib.preset("quick").replace(channels=12, ops=["sep_conv_3x3", "skip_connect"])
    cfg.save(tmp_path / "c.json")
    assert config_lib.SearchConfig.load(tmp_path / "c.json") == cfg
    assert json.loads((tmp_path / "c.json").read_text())["ops"] == ["sep_conv_3x3", "skip_connect"]
    (tmp_path / "c.yaml").write_text("channels: 6\nweight_vd: true\n")
    partial = config_lib.settle(config_lib.SearchConfig, preset="smoke", config=str(tmp_path / "c.yaml"))
    assert partial == config_lib.preset("smoke").replace(channels=6, weight_vd=True)


def test_precedence_preset_then_config_then_overrides():
    cfg = config_lib.settle(config_lib.SearchConfig, preset="smoke", config={"epochs": 7, "seed": 1}, epochs=9)
    assert cfg.epochs == 9 and cfg.seed == 1 and cfg.layers == config_lib.preset("smoke").layers


def test_replace_sets_none_and_an_override_left_none_is_not_given():
    quick = config_lib.preset("quick")
    assert quick.resolution == 14 and quick.limit == 1600
    # `replace` sets a field to None (full size, every image): it used to keep 14 and 1600 silently.
    full = quick.replace(resolution=None, limit=None)
    assert (full.resolution, full.limit) == (None, None)
    assert quick.replace(arch_lr=None).arch_lr is None
    # An argument or flag left None leaves the config's value; a None inside `config` is a value.
    assert quick.override(resolution=None, epochs=3) == quick.replace(epochs=3)
    assert config_lib.settle(config_lib.SearchConfig, preset="quick", config={"resolution": None}, epochs=None,
                             seed=None) == full.replace(limit=1600)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"channels": -3}, "`channels` must be positive. Received: channels=-3"),
        ({"channels": 2.5}, "`channels` must be an int. Received: channels=2.5"),
        ({"weight_vd": "yes"}, "`weight_vd` must be a bool. Received: weight_vd='yes'"),
        ({"arch_lr": float("nan")}, "`arch_lr` must be a finite number. Received: arch_lr=nan"),
        ({"kl_warmup": 1.5}, "`kl_warmup` must be in [0, 1]. Received: kl_warmup=1.5"),
        ({"optimization": "second_order"},
         "`optimization` must be one of 'bilevel', 'joint'. Received: optimization='second_order'"),
        ({"op_set": "nasnet"}, "Unknown operation set 'nasnet'. Known sets: darts, darts_none, mobile"),
        ({"ops": ["conv_9x9"]}, "Unknown operation 'conv_9x9'. Known operations: avg_pool_3x3, "
         "dil_conv_3x3, dil_conv_5x5, max_pool_3x3, mbconv_3x3_e3, none, sep_conv_3x3, sep_conv_5x5, skip_connect. "
         "To use an operation of your own, register it first: `tfvnas.register_op('conv_9x9', factory)`, with "
         "`factory(channels, strides)` returning a keras.layers.Layer, in the process that builds the model."),
        ({"limit": 0}, "`limit` must be positive. Received: limit=0"),
        ({"batch_size": 0}, "`batch_size` must be positive. Received: batch_size=0"),
    ],
)
def test_bad_values(fields, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        config_lib.SearchConfig.from_dict({**config_lib.preset("smoke").to_dict(), **fields})


def test_unknown_field_and_preset():
    with pytest.raises(ValueError, match=re.escape("Unknown SearchConfig field(s): chanels. Known fields: ")):
        config_lib.SearchConfig.from_dict({"chanels": 3})
    with pytest.raises(ValueError, match=re.escape("Unknown preset 'huge'. Known presets: smoke, quick, paper")):
        config_lib.preset("huge")


def test_bad_config_files(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"Config file not found. Received: '{tmp_path}/no.json'")):
        config_lib.read_config_file(tmp_path / "no.json")
    (tmp_path / "bad.json").write_text("{channels: ")
    with pytest.raises(ValueError, match=re.escape(f"Could not read config file '{tmp_path}/bad.json': ")):
        config_lib.read_config_file(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=re.escape(
        f"Config file '{tmp_path}/list.json' must hold a mapping of field names to values. Received: list"
    )):
        config_lib.read_config_file(tmp_path / "list.json")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match=re.escape(f"Could not read config file '{tmp_path}/bad.yaml': ")):
        config_lib.read_config_file(tmp_path / "bad.yaml")


def test_darts_gets_its_own_op_set_in_every_route_unless_one_is_chosen(tmp_path):
    settle = config_lib.settle
    assert settle(config_lib.SearchConfig, preset="smoke", method="darts").op_set == "darts_none"
    # The same rule for a config that names the method (the tuner's and the scripts' route).
    assert settle(config_lib.SearchConfig, preset="smoke", config={"method": "darts"}).op_set == "darts_none"
    (tmp_path / "d.yaml").write_text("method: darts\n")
    assert settle(config_lib.SearchConfig, preset="smoke", config=str(tmp_path / "d.yaml")).op_set == "darts_none"
    # An op set or ops chosen anywhere are kept.
    assert settle(config_lib.SearchConfig, preset="smoke", config={"method": "darts", "op_set": "darts"}).op_set == "darts"
    chosen = settle(config_lib.SearchConfig, preset="smoke", method="darts", config={"ops": ["sep_conv_3x3", "none"]})
    assert chosen.op_names == ("sep_conv_3x3", "none")
    assert settle(config_lib.SearchConfig, preset="smoke").op_set == "darts"
    # A config object carries every field, so only a departure from the default op set is a choice.
    smoke = config_lib.preset("smoke")
    assert settle(config_lib.SearchConfig, config=smoke, method="darts").op_set == "darts_none"
    assert settle(config_lib.SearchConfig, config=smoke.replace(op_set="mobile"), method="darts").op_set == "mobile"
    # The identity: normalised for VINNAS, DARTS' plain one for DARTS unless chosen.
    assert smoke.skip_bn and settle(config_lib.SearchConfig, preset="quick").skip_bn
    assert not settle(config_lib.SearchConfig, preset="quick", method="darts").skip_bn
    assert not settle(config_lib.SearchConfig, config={"method": "darts"}).skip_bn
    assert settle(config_lib.SearchConfig, config={"method": "darts", "skip_bn": True}).skip_bn
    assert not settle(config_lib.SearchConfig, config=smoke.replace(skip_bn=False)).skip_bn
    # The cell: chosen by perturbation for VINNAS (the smoke preset keeps the gates' rule, for speed),
    # by DARTS' own gates for DARTS unless chosen.
    assert settle(config_lib.SearchConfig, preset="quick").selection == "perturbation"
    assert config_lib.preset("paper").selection == "perturbation" and smoke.selection == "gates"
    assert settle(config_lib.SearchConfig, preset="quick", method="darts").selection == "gates"
    assert settle(config_lib.SearchConfig, config={"method": "darts", "selection": "perturbation"}).selection == \
        "perturbation"
    assert settle(config_lib.SearchConfig, preset="quick", selection="gates").selection == "gates"
    # DARTS' first-order bi-level search where a preset's joint one was not chosen, at the same gate updates.
    quick = config_lib.preset("quick")
    assert quick.optimization == "joint"
    darts = settle(config_lib.SearchConfig, preset="quick", method="darts")
    assert (darts.optimization, darts.epochs) == ("bilevel", 2 * quick.epochs)
    assert settle(config_lib.SearchConfig, preset="quick", method="darts", epochs=3).epochs == 3
    kept = settle(config_lib.SearchConfig, preset="quick", method="darts", config={"optimization": "joint"})
    assert (kept.optimization, kept.epochs) == ("joint", quick.epochs)
    assert settle(config_lib.SearchConfig, preset="smoke", method="darts").epochs == smoke.epochs  # bi-level already


def test_run_and_search_see_the_same_splits_for_the_same_config(tmp_path, monkeypatch):
    from tfvnas import data as data_lib
    from tfvnas import pipeline
    from tfvnas.loops import loop as loop_lib

    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\n")
    seen = []
    real = data_lib.load

    def load(name, **kwargs):
        seen.append(kwargs["seed"])
        return real(name, **kwargs)

    monkeypatch.setattr(data_lib, "load", load)
    _, cfg, searched = loop_lib.open_run(config_lib.SearchConfig, "mnist-5k", preset="smoke", config=str(path))

    class Stop(Exception):
        pass

    def stop(dataset, **kwargs):
        raise Stop(dataset)

    monkeypatch.setattr("tfvnas.loops.searching.search", stop)
    with pytest.raises(Stop) as caught:
        pipeline.run("mnist-5k", preset="smoke", search_config=str(path), out_dir=tmp_path / "run", verbose=0)
    ran = caught.value.args[0]
    assert seen == [3, 3] and cfg.seed == 3
    import numpy as np

    np.testing.assert_array_equal(ran.y_val, searched.y_val)
    np.testing.assert_array_equal(ran.x_train, searched.x_train)


def test_edges_are_traced_inline_under_xla():
    cfg = config_lib.SearchConfig()
    assert cfg.shared_edge_functions and cfg.edges_shared
    assert not cfg.replace(jit_compile=True).edges_shared
    assert not cfg.replace(shared_edge_functions=False).edges_shared
