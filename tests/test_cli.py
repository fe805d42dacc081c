"""The `tfvnas` command: bad input gives one line and a non-zero exit, never a traceback."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfvnas.cli import main


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def test_unknown_dataset(capsys):
    code, err = _run(capsys, ["search", "--dataset", "imagenet-21k", "--preset", "smoke", "--out", "x"])
    assert code == 2
    assert err.startswith("tfvnas: error: ") and err.count("\n") == 1
    assert "imagenet-21k" in err and "mnist-5k" in err and "Traceback" not in err


def test_corrupt_npz(tmp_path, capsys):
    path = tmp_path / "broken.npz"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    code, err = _run(capsys, ["search", "--dataset", str(path), "--preset", "smoke", "--out", str(tmp_path / "o")])
    assert code == 2 and err.startswith("tfvnas: error: ") and err.count("\n") == 1
    assert str(path) in err
    assert not (tmp_path / "o").exists()


def test_bad_config_file(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"channels": -3}')
    code, err = _run(capsys, ["search", "--preset", "smoke", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert (code, err) == (2, "tfvnas: error: `channels` must be positive. Received: channels=-3\n")


def test_missing_config_file(tmp_path, capsys):
    code, err = _run(capsys, ["search", "--config", str(tmp_path / "none.yaml")])
    assert (code, err) == (2, f"tfvnas: error: Config file not found. Received: '{tmp_path}/none.yaml'\n")


def test_labels_out_of_range(tmp_path, capsys):
    path = tmp_path / "d.npz"
    x = np.zeros((20, 8, 8), np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(20) % 2, x_test=x[:4], y_test=np.array([0, 1, 2, 1]))
    code, err = _run(capsys, ["search", "--dataset", str(path), "--preset", "smoke"])
    assert code == 2 and err.startswith("tfvnas: error: ") and err.count("\n") == 1
    assert "y_test" in err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["search", "--epochs", "0"], "argument --epochs: expected a positive integer, received '0'"),
        (["search", "--epochs", "-2"], "argument --epochs: expected a positive integer, received '-2'"),
        (["search", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
        (["search", "--seed", "x"], "argument --seed: expected an integer, received 'x'"),
        (["fly"], "argument COMMAND: invalid choice: 'fly'"),
    ],
)
def test_argument_errors(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert fragment in capsys.readouterr().err


def test_help_is_fast_and_lists_options():
    out = subprocess.run(
        [sys.executable, "-m", "tfvnas.cli", "search", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    for option in ("--dataset", "--preset", "--out", "--epochs", "--seed", "--config"):
        assert option in out.stdout


@pytest.mark.parametrize("multiworker", [False, True])
def test_console_entry_exits_with_the_command_status(tmp_path, multiworker):
    # `entry` (the console script) leaves through os._exit, or through the
    # normal exit under TF_CONFIG; the status and the one-line error must
    # survive both.
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    if multiworker:
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}})
    out = subprocess.run(
        [sys.executable, "-m", "tfvnas.cli", "train", "--genotype", "no_such_cell", "--out", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("tfvnas: error: ")
    assert not (tmp_path / "t").exists()


_LIGHT_CHECK = """
import sys
{code}
heavy = [m for m in ("tensorflow", "keras", "ai_edge_litert", "tf_keras", "tensorflow_model_optimization",
                     "keras_tuner", "matplotlib") if m in sys.modules]
print("heavy modules:" + ",".join(heavy))
"""


def _light(code):
    out = subprocess.run([sys.executable, "-c", _LIGHT_CHECK.format(code=code)], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    return out.stdout.rsplit("heavy modules:", 1)[1].strip(), out.stderr


@pytest.mark.parametrize("argv", [["--help"], ["search", "--help"], ["run", "--help"], ["tune", "--help"],
                                  ["search", "--epochs", "x"], ["train"], ["frobnicate"]])
def test_help_and_argument_errors_load_nothing_heavy(argv):
    code = (f"from tfvnas.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as e:\n"
            "    assert e.code in (0, 2), e.code")
    heavy, err = _light(code)
    assert heavy == ""
    assert "I0000" not in err and "absl" not in err


def test_import_tfvnas_loads_nothing_heavy():
    heavy, _ = _light("import tfvnas\nassert 'search' in dir(tfvnas) and callable(tfvnas.Genotype)")
    assert heavy == ""


def test_the_public_api_loads_on_use():
    heavy, _ = _light("import tfvnas\nassert callable(tfvnas.search) and callable(tfvnas.export)")
    assert "tensorflow" in heavy.split(",")


def test_the_command_line_offers_the_presets_the_configs_define():
    from tfvnas import choices, config

    assert tuple(config.PRESETS) == choices.PRESET_NAMES == tuple(config.TRAIN_PRESETS)


def test_tensorflow_start_up_lines_are_filtered():
    from tfvnas import cli

    # The import itself runs in this process already (the suite imports TensorFlow),
    # so the filter is exercised on a fresh child instead.
    child = subprocess.run(
        [sys.executable, "-c", "from tfvnas.cli import _import_tensorflow_quietly as q; q(); "
         "import sys; print('tensorflow' in sys.modules)"],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert child.stdout.strip() == "True"
    assert not any(line.startswith(cli._TENSORFLOW_START_UP_LINES) for line in child.stderr.splitlines())


def test_python_dash_m_tfvnas_is_the_command():
    out = subprocess.run([sys.executable, "-m", "tfvnas", "--help"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: tfvnas")


def test_an_actionable_error_is_one_line_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    from tfvnas.checks import ActionableError
    from tfvnas.pictures import plots

    def missing_tool(target, **kwargs):
        raise ActionableError("`engine='dot'` needs graphviz's `dot` on PATH. Received: no `dot` found on PATH")

    monkeypatch.setattr(plots, "show", missing_tool)
    assert main(["show", "darts_v2"]) == 2
    assert capsys.readouterr().err == (
        "tfvnas: error: `engine='dot'` needs graphviz's `dot` on PATH. Received: no `dot` found on PATH\n")

    def bug(target, **kwargs):
        raise RuntimeError("an internal invariant broke")

    monkeypatch.setattr(plots, "show", bug)
    with pytest.raises(RuntimeError, match="^an internal invariant broke$"):
        main(["show", "darts_v2"])


def test_every_option_reaches_the_library_call(monkeypatch):
    # The one forwarder: each subcommand's options arrive as the function's keywords.
    import functools

    from tfvnas.loops import searching, training

    calls = {}

    def recorder(real):
        @functools.wraps(real)  # the real signature, which the forwarder reads
        def record(*a, **k):
            calls[real.__name__] = (a, k)

        return record

    monkeypatch.setattr(searching, "search", recorder(searching.search))
    monkeypatch.setattr(training, "train", recorder(training.train))
    main(["search", "--dataset", "x.npz", "--epochs", "3", "--seed", "4", "--method", "darts", "--out", "o",
          "--resume", "--checkpoint-every", "5", "--deterministic", "--tensorboard", "tb", "--quiet",
          "--worker-timeout", "7.5", "--collective-timeout", "600"])
    args, kwargs = calls["search"]
    assert args == ("x.npz",)
    assert kwargs == dict(preset="quick", epochs=3, seed=4, config=None, strategy="auto", resume=True,
                          overwrite=False, checkpoint_every=5, deterministic=True, tensorboard_dir="tb",
                          method="darts", out_dir="o", worker_timeout=7.5, collective_timeout=600.0, verbose=0)
    main(["train", "--genotype", "darts_v2", "--out", "t", "--overwrite"])
    args, kwargs = calls["train"]
    assert args == ("darts_v2", "mnist-5k") and kwargs["out_dir"] == "t" and kwargs["verbose"] == 1
    assert kwargs["overwrite"] is True and kwargs["worker_timeout"] is None
