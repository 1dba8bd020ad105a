"""Training at toy size: it runs, saves, resumes exactly, stops safely, distributes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest
from conftest import REPO, start_cli_training, wait_for

from stainvirt.config import Config, preset
from stainvirt.errors import StainvirtError
from stainvirt.rundir import RunDir
from stainvirt.training.data import UnpairedSampler
from stainvirt.training.schedule import LinearDecay
from stainvirt.training.trainer import train


def tiny(**changes) -> Config:
    return preset("tiny").replace(**changes)


class StopAt(keras.callbacks.Callback):
    """Stops training after batch ``batch`` of epoch ``epoch`` (0-based), like Ctrl-C would."""

    def __init__(self, epoch: int, batch: int):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            self.model.stop_training = True


def state_arrays(run) -> dict[str, np.ndarray]:
    with h5py.File(RunDir(run).state_path) as f:
        return {f"{g}/{k}": f[g][k][()] for g in f for k in f[g]}


def test_sampler_is_a_pure_function_of_seed_and_step():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (5, 40, 40, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    cfg = tiny(batch_size=2, steps_per_epoch=4)
    first, second = UnpairedSampler(a, b, cfg), UnpairedSampler(a, b, cfg)
    for step in (0, 3, 4, 9):
        for x, y in zip(first.batch(step), second.batch(step), strict=True):
            np.testing.assert_array_equal(x, y)
    batch_a, batch_b = first.batch(0)
    assert batch_a.shape == (2, 32, 32, 3) and batch_b.shape == (2, 32, 32, 3)
    assert not np.array_equal(first.batch(0)[0], first.batch(1)[0])
    other = UnpairedSampler(a, b, cfg.replace(seed=1))
    assert not np.array_equal(other.batch(0)[0], batch_a)
    # An epoch walks a permutation of A: every A tile is used before any repeats.
    cfg5 = tiny(batch_size=1, steps_per_epoch=5, image_size=40)
    walk = UnpairedSampler(a, b, cfg5)
    seen = {next(i for i in range(5) if _is_view_of(walk.batch(s)[0][0], a[i])) for s in range(5)}
    assert seen == set(range(5))


def _is_view_of(crop: np.ndarray, tile: np.ndarray) -> bool:
    """True if crop is tile under one of the 8 flips/rotations."""
    for k in range(4):
        for t in (tile, tile[:, ::-1]):
            if np.array_equal(np.rot90(t, k), crop):
                return True
    return False


def test_linear_decay_matches_the_reference_rule():
    schedule = LinearDecay(2e-4, epochs=2, epochs_decay=2, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 19, 20, 30, 39)]
    # Reference lambda_rule: 1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1).
    np.testing.assert_allclose(rates, [2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 / 3, 2e-4 / 3], rtol=1e-6)


def test_train_writes_a_complete_run_folder(data_path, tmp_path):
    run = RunDir(tmp_path / "run")
    result = train(data_path, run.path, tiny(), verbose=0)
    assert (result.epochs_done, result.steps_done, result.stopped) == (2, 6, "finished")
    for path in (run.config_path, run.data_path, run.generator_path("A2B"),
                 run.generator_path("B2A"), run.state_path, run.history_path, run.losses_path,
                 run.sample_path(1), run.sample_path(2)):
        assert path.is_file(), path
    assert sorted(p.name for p in run.path.iterdir()) == sorted([
        "config.json", "data.json", "G_AB.keras", "G_BA.keras", "state.h5", "history.csv",
        "losses.png", "samples"])
    assert run.load_config() == tiny()
    history = run.read_history()
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(np.isfinite(v) for row in history for v in row.values())
    assert history[0]["lr"] == pytest.approx(2e-4) and history[1]["lr"] == pytest.approx(1e-4)
    # The saved generator reloads on its own and translates any multiple-of-4 size.
    import stainvirt.models  # noqa: F401  (registers the custom layers)

    g = keras.models.load_model(run.generator_path("A2B"), compile=False)
    out = np.asarray(g(np.zeros((1, 44, 36, 3), np.float32)))
    assert out.shape == (1, 44, 36, 3) and np.isfinite(out).all()
    assert not list(run.path.rglob(".*tmp*"))


def test_resume_mid_epoch_gives_bitwise_identical_state(data_path, tmp_path):
    cfg = tiny(epochs=2, epochs_decay=2, steps_per_epoch=3)
    straight = tmp_path / "straight"
    train(data_path, straight, cfg, verbose=0)
    resumed = tmp_path / "resumed"
    first = train(data_path, resumed, cfg, verbose=0, callbacks=[StopAt(epoch=1, batch=1)])
    assert (first.steps_done, first.stopped) == (5, "stopped")
    second = train(data_path, resumed, None, verbose=0)  # resume with the saved config
    assert (second.steps_done, second.stopped) == (12, "finished")
    a, b = state_arrays(straight), state_arrays(resumed)
    assert a.keys() == b.keys() and any(k.startswith("g_optimizer") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    rows = RunDir(resumed).read_history()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["lr"] for r in rows] == [r["lr"] for r in RunDir(straight).read_history()]


def test_resume_refuses_a_different_config(data_path, tmp_path):
    run = tmp_path / "run"
    train(data_path, run, tiny(epochs_decay=0), verbose=0)
    with pytest.raises(StainvirtError, match=r"different config \(ngf: saved 8, requested 16"):
        train(data_path, run, tiny(epochs_decay=0), overrides={"ngf": 16}, verbose=0)
    with pytest.raises(StainvirtError, match="nothing to resume"):
        train(data_path, tmp_path / "empty", None, verbose=0)


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(data_path, tmp_path):
    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                kernel = self.model.G_AB.trainable_variables[0]
                kernel.assign(np.full(kernel.shape, np.nan, np.float32))

    run = tmp_path / "run"
    with pytest.raises(StainvirtError, match=r"diverged \(nan: .*\) at step 4"):
        train(data_path, run, tiny(), verbose=0, callbacks=[Poison()])
    with h5py.File(RunDir(run).state_path) as f:
        assert int(f.attrs["epoch"]) == 1
        assert all(np.isfinite(f[g][k][()]).all() for g in f for k in f[g])
    assert [r["epoch"] for r in RunDir(run).read_history()] == [1]


def test_bad_inputs_are_clear_errors(data_path, tmp_path):
    with pytest.raises(StainvirtError, match="data set not found"):
        train(tmp_path / "missing.npz", tmp_path / "r", tiny(), verbose=0)
    with pytest.raises(StainvirtError, match="smaller than --image-size 128"):
        train(data_path, tmp_path / "r", tiny(image_size=128), verbose=0)
    with pytest.raises(StainvirtError, match="multiple of 4 of at least 32"):
        tiny(image_size=30)
    with pytest.raises(StainvirtError, match="unknown config field"):
        tiny(bogus=1)
    with pytest.raises(StainvirtError, match="unknown preset"):
        preset("huge")
    assert not (tmp_path / "r").exists()


def test_cli_train_as_a_user_runs_it(data_path, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "stainvirt", "train", "--data", str(data_path),
           "--out", str(run), "--preset", "tiny", "--epochs", "1", "--epochs-decay", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "training finished: 1 epochs, 3 steps" in done.stdout
    assert RunDir(run).load_config().epochs_decay == 0
    again = subprocess.run(cmd[:-4] + ["--ngf", "4"], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith(f"error: {run} holds a run with a "
                                                            "different config (ngf: saved 8")
    assert "Traceback" not in again.stderr


DISTRIBUTED = textwrap.dedent("""
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import h5py, numpy as np
    from stainvirt.config import preset
    from stainvirt.rundir import RunDir
    from stainvirt.training.trainer import train
    data, out = sys.argv[1], sys.argv[2]
    cfg = preset("tiny").replace(epochs=1, epochs_decay=0, steps_per_epoch=2, pool_size=4)
    for strategy in ("default", "mirrored"):
        train(data, f"{out}/{strategy}", cfg.replace(strategy=strategy), verbose=0)
    one, two = (RunDir(f"{out}/{s}").read_history()[0] for s in ("default", "mirrored"))
    for key in ("G", "D_A", "D_B", "cycle_A", "G_BA_idt"):
        assert abs(one[key] - two[key]) <= 1e-4 * max(1.0, abs(one[key])), (key, one, two)
    weights = []
    for s in ("default", "mirrored"):
        with h5py.File(RunDir(f"{out}/{s}").state_path) as f:
            weights.append(np.concatenate([f["G_AB"][k][()].ravel() for k in f["G_AB"]]))
    diff = np.abs(weights[0] - weights[1])
    # Summation order differs across replicas; Adam's first steps move each weight by about
    # lr whatever the gradient's size, so a near-zero gradient can flip: bound by 2 * lr * steps.
    assert diff.max() <= 2 * cfg.lr * 2 + 1e-7, diff.max()
    assert np.median(diff) < 1e-6, np.median(diff)
    print("replicas agree", one["G"], two["G"], diff.max(), np.median(diff))
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpus_matches_one_device(data_path, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", DISTRIBUTED, str(data_path), str(tmp_path)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "replicas agree" in done.stdout


def test_time_budget_stops_after_one_step_saved(data_path, tmp_path):
    run = tmp_path / "run"
    result = train(data_path, run, tiny(), max_minutes=0, verbose=0)
    assert (result.steps_done, result.stopped) == (1, "time budget")
    with h5py.File(RunDir(run).state_path) as f:
        assert int(f.attrs["epoch"]) == 1
    assert RunDir(run).generator_path("A2B").is_file() and RunDir(run).sample_path(1).is_file()
    assert train(data_path, run, None, verbose=0).steps_done == 6


@pytest.mark.slow
def test_kill_9_loses_at_most_one_epoch(data_path, tmp_path):
    run = RunDir(tmp_path / "run")
    proc = start_cli_training(data_path, run.path)
    wait_for(run.sample_path(3), proc)
    proc.kill()
    proc.communicate()
    rows = run.read_history()
    assert len(rows) >= 3
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    # The state on disk is complete and loads; the run continues from it.
    resumed = train(None, run.path, None, callbacks=[StopAt(epoch=len(rows), batch=0)],
                    verbose=0)
    assert resumed.steps_done == 3 * len(rows) + 1
    assert not list(run.path.rglob(".*tmp*"))
