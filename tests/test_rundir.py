"""The run folder as one contract: extending runs, the data-set record, checked state, temps."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import REPO, SAMPLE, start_cli_training, wait_for

from stainvirt.cli.quiet import filter_stream, is_noise
from stainvirt.config import preset
from stainvirt.errors import StainvirtError
from stainvirt.prepare import prepare
from stainvirt.rundir import RunDir
from stainvirt.training.schedule import LinearDecay
from stainvirt.training.trainer import train


def tiny(**changes):
    return preset("tiny").replace(**changes)


def state_arrays(run) -> dict[str, np.ndarray]:
    with h5py.File(RunDir(run).state_path) as f:
        return {f"{g}/{k}": f[g][k][()] for g in f for k in f[g]}


def assert_same_state(a, b):
    x, y = state_arrays(a), state_arrays(b)
    assert x.keys() == y.keys()
    for key in x:
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_extending_a_finished_run_equals_planning_it_that_long(data_path, tmp_path, caplog):
    planned = tmp_path / "planned"
    train(data_path, planned, tiny(epochs=4, epochs_decay=0), verbose=0)
    extended = tmp_path / "extended"
    assert train(data_path, extended, tiny(epochs=2, epochs_decay=0), verbose=0).epochs_done == 2
    with caplog.at_level(logging.INFO, logger="stainvirt"):
        result = train(None, extended, None, overrides={"epochs": 4}, verbose=0)
    assert (result.epochs_done, result.stopped) == (4, "finished")
    assert "extending" in caplog.text and "epochs 2 -> 4" in caplog.text
    assert RunDir(extended).load_config() == tiny(epochs=4, epochs_decay=0)
    assert_same_state(planned, extended)
    assert [r["epoch"] for r in RunDir(extended).read_history()] == [1, 2, 3, 4]


def test_extending_during_the_decay_continues_on_the_new_schedule(data_path, tmp_path, caplog):
    run = RunDir(tmp_path / "run")
    train(data_path, run.path, tiny(epochs=1, epochs_decay=1), verbose=0)
    with caplog.at_level(logging.INFO, logger="stainvirt"):
        train(None, run.path, None, overrides={"epochs_decay": 3}, verbose=0)
    rows = run.read_history()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    # Epoch 2 ran on the old schedule; epochs 3 and 4 follow the new one, as documented.
    old, new = LinearDecay(2e-4, 1, 1, 3), LinearDecay(2e-4, 1, 3, 3)
    assert rows[1]["lr"] == pytest.approx(float(old(5)))
    assert [r["lr"] for r in rows[2:]] == pytest.approx([float(new(8)), float(new(11))])
    assert "learning rate now 0.0001 (the old schedule's: 0)" in caplog.text


def test_a_preset_on_resume_does_not_change_the_schedule(data_path, tmp_path):
    run = tmp_path / "run"
    train(data_path, run, tiny(epochs=1, epochs_decay=0), verbose=0)
    # The tiny preset has 1 + 1 epochs; only an explicit override would change the saved 1 + 0.
    result = train(None, run, tiny(), verbose=0)
    assert result.epochs_done == 1 and RunDir(run).load_config().epochs_decay == 0


def test_shortening_below_what_is_done_and_other_changes_are_refused(data_path, tmp_path):
    run = tmp_path / "run"
    train(data_path, run, tiny(epochs=2, epochs_decay=0), verbose=0)
    with pytest.raises(StainvirtError, match="has trained 2 epochs already, more than the 1"):
        train(None, run, None, overrides={"epochs": 1}, verbose=0)
    with pytest.raises(StainvirtError, match=r"ngf: saved 8, requested 4; seed: saved 0, "
                                             r"requested 3\); on resume only --epochs"):
        train(None, run, None, overrides={"ngf": 4, "seed": 3, "epochs": 5}, verbose=0)
    assert RunDir(run).load_config().epochs == 2


def test_the_run_records_its_data_set_and_refuses_a_silent_switch(data_path, tmp_path, caplog):
    data = tmp_path / "stain.npz"
    data.write_bytes(data_path.read_bytes())
    run = RunDir(tmp_path / "run")
    train(data, run.path, tiny(epochs=1, epochs_decay=0), verbose=0)
    record = run.data_record()
    assert record["path"] == str(data.absolute())
    assert record["counts"]["trainA"] > 0 and record["steps_per_epoch"] == 3
    assert len(record["fingerprint"]) == 32
    # The same content packed again has the same fingerprint: resuming without --data is fine.
    prepare(SAMPLE / "trainA", SAMPLE / "trainB", data, test_a=SAMPLE / "testA",
            test_b=SAMPLE / "testB", tile_size=64, progress=False)
    assert train(None, run.path, None, overrides={"epochs": 2}, verbose=0).epochs_done == 2
    # Other content under the recorded name is refused unless --data says so.
    prepare(SAMPLE / "trainA", SAMPLE / "trainB", data, tile_size=64, progress=False)
    with pytest.raises(StainvirtError, match=f"{data} has changed since .* pass --data {data}"):
        train(None, run.path, None, overrides={"epochs": 3}, verbose=0)
    with caplog.at_level(logging.WARNING, logger="stainvirt"):
        train(data, run.path, None, overrides={"epochs": 3}, verbose=0)
    assert "resuming" in caplog.text and "on another data set" in caplog.text
    new_record = run.data_record()
    assert new_record["fingerprint"] != record["fingerprint"]
    assert new_record["earlier"][0]["fingerprint"] == record["fingerprint"]
    assert new_record["steps_per_epoch"] == 3


def test_a_run_without_a_data_record_needs_data(data_path, tmp_path):
    run = RunDir(tmp_path / "run")
    train(data_path, run.path, tiny(epochs=1, epochs_decay=0), verbose=0)
    run.data_path.unlink()
    with pytest.raises(StainvirtError, match="records no data set; pass --data"):
        train(None, run.path, None, verbose=0)


def test_a_checkpoint_with_a_renamed_variable_is_refused(data_path, tmp_path):
    run = RunDir(tmp_path / "run")
    train(data_path, run.path, tiny(epochs=1, epochs_decay=1), verbose=0)
    with h5py.File(run.state_path, "r+") as f:
        f["g_optimizer"]["0001"].attrs["name"] = "g_optimizer/renamed_kernel_momentum"
    with pytest.raises(StainvirtError, match=r"variable 1 of g_optimizer is "
                                             r"'g_optimizer/renamed_kernel_momentum' in the "
                                             r"checkpoint but 'g_optimizer/stem_conv_kernel_"
                                             r"momentum' here"):
        train(None, run.path, None, verbose=0)


def test_a_run_started_by_version_0_1_resumes_from_its_state_file(data_path, tmp_path):
    run = RunDir(tmp_path / "run")
    train(data_path, run.path, tiny(epochs=1, epochs_decay=0), verbose=0)
    legacy = run.path / RunDir.LEGACY_STATE
    run.state_path.rename(legacy)
    run.data_path.unlink()  # 0.1 recorded no data set
    history = run.history_path.read_text()
    run.history_path.write_text(history.replace("G_AB_idt", "idt_A").replace("G_BA_idt", "idt_B"))
    assert run.state_path == legacy
    result = train(data_path, run.path, None, overrides={"epochs": 2}, verbose=0)
    assert result.steps_done == 6  # continued from epoch 1, not started again
    assert run.state_path == legacy and not (run.path / RunDir.STATE).exists()
    rows = run.read_history()
    assert [r["epoch"] for r in rows] == [1, 2] and all("G_AB_idt" in r for r in rows)


def test_resume_without_a_run_is_refused_even_with_a_config(data_path, tmp_path):
    with pytest.raises(StainvirtError, match="nothing to resume"):
        train(data_path, tmp_path / "empty", tiny(), resume=True, verbose=0)
    assert not (tmp_path / "empty").exists()


def test_stale_temps_of_the_run_are_removed_and_nothing_else(tmp_path):
    run = RunDir(tmp_path / "run")
    run.samples_dir.mkdir(parents=True)
    ours = [run.path / ".G_AB.x1y2.tmp.keras", run.path / ".state.abc.tmp.h5",
            run.samples_dir / ".epoch_007.q9.tmp.png"]
    theirs = [run.path / ".notes.a1.tmp.txt", run.path / "mine.tmp.keras",
              run.path / "sub" / ".G_AB.x1y2.tmp.keras"]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert sorted(run.remove_stale_temps()) == sorted(ours)
    assert all(p.exists() for p in theirs) and not any(p.exists() for p in ours)


def test_latest_is_the_run_trained_last(tmp_path):
    assert RunDir.latest(tmp_path) is None
    for name, stamp in (("old", 1_000), ("new", 2_000), ("older", 500)):
        run = RunDir(tmp_path / name)
        run.save_config(tiny())
        os.utime(run.config_path, (stamp, stamp))
    (tmp_path / "not_a_run").mkdir()
    assert RunDir.latest(tmp_path).path == tmp_path / "new"


NATIVE_NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796125806.434581    2140 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results",
    "E0000 00:00:1796125815.874380    2140 meta_optimizer.cc:967] remapper failed: "
    "INVALID_ARGUMENT: Mutation::Apply error",
    "W0000 00:00:1796125815.874380    2140 cuda_dnn.cc:8310] Unable to register cuDNN factory",
]
KEPT = [
    "error: runs/x: model not found; ...",
    "E0000 00:00:1796125815.874380    2140 bfc_allocator.cc:485] Allocator ran out of memory",
    "F0000 00:00:1796125815.874380    2140 check.cc:1] Check failed: oneDNN custom operations",
    "/x.py:3: UserWarning: something real",
]


def test_the_stderr_filter_drops_native_noise_and_keeps_the_rest():
    assert all(is_noise(line) for line in NATIVE_NOISE)
    assert not any(is_noise(line) for line in KEPT)
    read_in, write_in = os.pipe()
    read_out, write_out = os.pipe()
    text = "\n".join(NATIVE_NOISE[:2] + KEPT[:2] + NATIVE_NOISE[2:] + KEPT[2:]) + "\n"
    os.write(write_in, text.encode() + b" 50%|###  | 1/2\r100%|#####| 2/2")
    os.close(write_in)
    filter_stream(read_in, write_out)
    os.close(write_out)
    out = os.read(read_out, 1 << 16).decode()
    assert out == "\n".join(KEPT) + "\n 50%|###  | 1/2\r100%|#####| 2/2"


def test_the_command_line_shows_no_tensorflow_start_up_lines(data_path, tmp_path):
    cmd = [sys.executable, "-m", "stainvirt", "train", "--data", str(data_path), "--out",
           str(tmp_path / "run"), "--preset", "tiny", "--epochs", "1", "--epochs-decay", "0"]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",
                                                            "STAINVIRT_VERBOSE")}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    noise = [line for line in done.stderr.splitlines()
             if "absl::InitializeLog" in line or line[:1] in "IWE" and line[1:5].isdigit()]
    assert noise == []
    assert "training finished: 1 epochs" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "sigint_ignored"), [
    (signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, True),
])
def test_sigint_and_sigterm_save_however_the_process_was_started(
    data_path, tmp_path, sig, sigint_ignored
):
    run = RunDir(tmp_path / "run")
    proc = start_cli_training(data_path, run.path,
                              sigint=signal.SIG_IGN if sigint_ignored else signal.SIG_DFL)
    wait_for(run.sample_path(1), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted and saved" in out
    with h5py.File(run.state_path) as f:
        assert int(f.attrs["epoch"]) >= 1
