"""XLA for the train step: ``--jit-compile auto|on|off`` and the fallback when XLA fails."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO

from stainvirt.config import Config, preset
from stainvirt.errors import StainvirtError
from stainvirt.rundir import RunDir
from stainvirt.training import jit
from stainvirt.training.cyclegan import CycleGAN
from stainvirt.training.trainer import train


def tiny(**changes) -> Config:
    return preset("tiny").replace(epochs=1, epochs_decay=0, steps_per_epoch=2, **changes)


def test_on_and_off_are_obeyed_and_auto_follows_the_device():
    assert jit.resolve_jit_compile(tiny(jit_compile="on")) is True
    assert jit.resolve_jit_compile(tiny(jit_compile="off")) is False
    # No GPU here: auto is on exactly where TensorFlow's convolutions are Eigen's.
    assert jit.resolve_jit_compile(tiny()) is (not jit.onednn_enabled())
    assert jit.resolve_jit_compile(tiny(), replicas=2) is False


def test_auto_turns_xla_on_when_the_cpu_runs_without_onednn():
    code = ("from stainvirt.config import preset; from stainvirt.training import jit; "
            "print(jit.onednn_enabled(), jit.resolve_jit_compile(preset('tiny')))")
    for flag, expected in (("0", "False True"), ("1", "True False")):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=REPO, env={"TF_ENABLE_ONEDNN_OPTS": flag, "PATH": ""})
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[-2:] == expected.split(), (flag, done.stdout)


def test_configs_of_earlier_versions_and_bad_values():
    assert Config.from_dict({"jit_compile": True}).jit_compile == "on"
    assert Config.from_dict({"jit_compile": False}).jit_compile == "off"
    with pytest.raises(StainvirtError, match="jit_compile must be auto, on or off, not 'yes'"):
        tiny(jit_compile="yes")


@pytest.fixture
def step_xla_cannot_compile(monkeypatch):
    """A train step with an op XLA has no kernel for (a Python function), like a foreign layer."""
    real_step = CycleGAN.train_step

    def train_step(self, data):
        logs = real_step(self, data)
        logs["G"] = tf.numpy_function(lambda x: x, [logs["G"]], tf.float32, stateful=False)
        return logs

    monkeypatch.setattr(CycleGAN, "train_step", train_step)
    # Wherever the suite runs, auto must have chosen XLA for the fallback to matter.
    monkeypatch.setattr(jit, "_auto", lambda replicas: (True, "forced for the test"))


def test_auto_falls_back_without_xla_when_the_step_does_not_compile(
    data_path, tmp_path, step_xla_cannot_compile, caplog
):
    with caplog.at_level(logging.WARNING, logger="stainvirt"):
        result = train(data_path, tmp_path / "run", tiny(), verbose=0)
    assert (result.steps_done, result.stopped) == (2, "finished")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(
        "XLA could not compile the train step"), warnings
    assert "--jit-compile off" in warnings[0] and "\n" not in warnings[0]
    rows = RunDir(tmp_path / "run").read_history()
    assert [r["epoch"] for r in rows] == [1] and np.isfinite(rows[0]["G"]) and rows[0]["G"] > 0


def test_xla_asked_for_explicitly_fails_loudly(data_path, tmp_path, step_xla_cannot_compile):
    with pytest.raises(tf.errors.OpError, match="XLA|compil"):
        train(data_path, tmp_path / "run", tiny(jit_compile="on"), verbose=0)
