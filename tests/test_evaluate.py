"""`stainvirt evaluate` at toy size: paired and unpaired reports, baselines, every bad input."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, save, tissue_image
from skimage import data
from test_metrics import lab_shift

from stainvirt.cli import main
from stainvirt.config import preset
from stainvirt.errors import StainvirtError
from stainvirt.evaluate import evaluate, write_report
from stainvirt.evaluate.metrics import distribution_distances
from stainvirt.evaluate.report import FIGURE_PNG, notes, verdict
from stainvirt.io.images import list_images, read_image
from stainvirt.pairing import match_pairs
from stainvirt.rundir import RunDir


@pytest.fixture(scope="module")
def mapped(tmp_path_factory) -> tuple[Path, Path]:
    """Paired folders where every target is its source under one global Lab mapping.

    The sources are flips and rotations of one IHC crop, so they share its colour
    statistics and a Reinhard transfer fitted on the targets can undo the mapping.
    """
    root = tmp_path_factory.mktemp("mapped")
    crop = data.immunohistochemistry()[100:164, 200:264]
    for i, image in enumerate((crop, crop[::-1], crop[:, ::-1], np.rot90(crop))):
        save(root / "src" / f"t{i}.png", np.ascontiguousarray(image))
        save(root / "tgt" / f"t{i}.png", lab_shift(np.ascontiguousarray(image)))
    return root / "src", root / "tgt"


@pytest.fixture
def unpaired(tmp_path) -> tuple[Path, Path]:
    """Three H&E-like sources (one in a subfolder, one of another size) and two IHC-like targets."""
    save(tmp_path / "A" / "a0.png", tissue_image(64, 64, 0))
    save(tmp_path / "A" / "a1.png", tissue_image(48, 80, 1))
    save(tmp_path / "A" / "sub" / "a2.png", tissue_image(64, 64, 2))
    save(tmp_path / "B" / "b0.png", tissue_image(64, 64, 3, hue="ihc"))
    save(tmp_path / "B" / "b1.png", tissue_image(40, 40, 4, hue="ihc"))
    return tmp_path / "A", tmp_path / "B"


def strict_json(path: Path) -> dict:
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}, which is not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_reinhard_beats_identity_on_a_known_colour_mapping(run_dir, mapped):
    result = evaluate(run_dir, "A2B", mapped[0], target=mapped[1], paired=True, baselines=True,
                      progress=False)
    assert result.methods == ("model", "identity", "reinhard")
    assert len(result.images) == 4
    assert set(result.images[0]["metrics"]["model"]) == {
        "psnr", "ssim", "dab_corr", "hematoxylin_corr", "dab_dice"}
    summary = result.summary()
    assert summary["reinhard"]["psnr"] > summary["identity"]["psnr"] + 10
    assert summary["reinhard"]["ssim"] > summary["identity"]["ssim"]
    assert summary["identity"]["psnr"] < 30
    assert "Reinhard scores worse" not in " ".join(notes(result))


def test_paired_report_files_with_undefined_correlations(run_dir, tmp_path):
    # A blank tile pair: the identity matches it exactly (r = 1), while the
    # model's and Reinhard's outputs are compared with a constant DAB map (r undefined).
    for name, seed in (("t0", 0), ("t1", 1), ("t2", 2)):
        save(tmp_path / "he" / f"{name}.png", tissue_image(64, 64, seed))
        save(tmp_path / "ihc" / f"{name}_IHC.png", tissue_image(64, 64, seed + 10, hue="ihc"))
    save(tmp_path / "he" / "blank.png", np.full((64, 64, 3), 255, np.uint8))
    save(tmp_path / "ihc" / "blank.png", np.full((64, 64, 3), 255, np.uint8))
    result = evaluate(run_dir, "A2B", tmp_path / "he", target=tmp_path / "ihc", paired=True,
                      baselines=True, figure_images=1, progress=False)
    assert result.undefined()["model"]["dab_corr"] == 1
    assert "identity" not in result.undefined()

    paths = write_report(result, tmp_path / "out")
    report = strict_json(paths["json"])
    blank = next(image for image in report["images"] if image["name"] == "blank.png")
    assert blank["metrics"]["model"]["dab_corr"] is None
    assert blank["metrics"]["identity"]["dab_corr"] == 1.0
    assert report["settings"]["dab_threshold"] == 0.03
    assert report["model_config"] == preset("tiny").to_dict()
    assert [row["label"] for row in report["figure"]["rows"]] == ["worst 1", "best 1"]
    assert len(report["images"]) == 4 and report["summary"]["model"]["psnr"] > 0

    md = paths["markdown"].read_text()
    for expected in ("| model |", "| identity |", "| Reinhard |", "**Verdict:**",
                     "data_range=255, channel_axis=-1, 7x7 uniform window",
                     "DAB optical density > 0.03", "left out of the means: model DAB r on 1 of 4",
                     f"]({FIGURE_PNG})"):
        assert expected in md
    assert 0 < paths["figure"].stat().st_size < 1_000_000


def test_unpaired_scores_distributions_and_the_cycle(run_dir, unpaired, tmp_path):
    source, target = unpaired
    result = evaluate(run_dir, "A2B", source, target=target, baselines=True, progress=False)
    assert result.methods == ("model", "identity", "reinhard")
    # The identity's translations are the sources themselves.
    expected = distribution_distances(map(read_image, list_images(source)),
                                      map(read_image, list_images(target)))
    assert result.distances["identity"] == pytest.approx(expected)
    assert set(result.distances) == set(result.methods)
    for image in result.images:
        assert set(image["metrics"]) == {"model"}  # the cycle is the model's only
        assert set(image["metrics"]["model"]) == {"cycle_psnr", "cycle_ssim"}
    assert [image["name"] for image in result.images] == ["a0.png", "a1.png", "sub/a2.png"]
    assert [row.label for row in result.figure_rows] == ["worst 1", "worst 2", "best 1"]
    assert all(panel.shape == row.panels[0].shape for row in result.figure_rows
               for panel in row.panels)
    summary = result.summary()
    assert np.isnan(summary["identity"].get("cycle_ssim", np.nan))
    assert "rgb_w1" in summary["reinhard"] and "cycle_psnr" in summary["model"]
    # The verdict compares only the distances every method has (lower is better):
    # a metric is named before "; it does not beat" iff the model beats both baselines on it.
    won = {label: all(summary["model"][m] < summary[b][m] for b in ("identity", "reinhard"))
           for m, label in (("rgb_w1", "RGB W1"), ("hematoxylin_w1", "hematoxylin W1"),
                            ("eosin_w1", "eosin W1"), ("dab_w1", "DAB W1"))}
    beaten, _, not_beaten = verdict(result).partition("; it does not beat ")
    assert beaten.startswith("the model beats the identity and Reinhard on " if any(won.values())
                             else "no metric has the model ahead of the identity and Reinhard")
    assert {label for label in won if label in beaten} == {k for k, v in won.items() if v}
    assert {label for label in won if label in not_beaten} == {k for k, v in won.items() if not v}
    assert "cycle" not in verdict(result)
    report = strict_json(write_report(result, tmp_path / "out")["json"])
    assert report["settings"]["mode"] == "unpaired"


def test_unpaired_without_target_reports_the_cycle_only(run_dir, unpaired):
    result = evaluate(run_dir, "B2A", unpaired[1], baselines=True, figure_images=0,
                      progress=False)
    assert result.methods == ("model",) and result.distances == {}
    assert result.figure_rows == []
    assert set(result.summary()["model"]) == {"cycle_psnr", "cycle_ssim"}
    text = " ".join(notes(result))
    assert "no --target" in text and "--baselines without --target" in text
    assert verdict(result).startswith("no baselines")


def test_pairs_match_by_name_extension_and_domain_tag(tmp_path, caplog):
    image = tissue_image(16, 16)
    for name in ("x.png", "sub/y.png", "z_HE.png"):
        save(tmp_path / "src" / name, image)
    for name in ("x.jpg", "sub/y.png", "z_IHC.png", "extra.png"):
        save(tmp_path / "tgt" / name, image)
    with caplog.at_level(logging.WARNING, logger="stainvirt"):
        pairs = match_pairs(tmp_path / "src", tmp_path / "tgt")
    names = [(s.relative_to(tmp_path / "src").as_posix(), t.name) for s, t in pairs]
    assert names == [("sub/y.png", "y.png"), ("x.png", "x.jpg"), ("z_HE.png", "z_IHC.png")]
    assert "extra" in caplog.text


def test_unmatched_names_are_listed(tmp_path):
    for i in range(7):
        save(tmp_path / "src" / f"s{i}.png", tissue_image(16, 16))
    save(tmp_path / "tgt" / "s0.png", tissue_image(16, 16))
    save(tmp_path / "tgt" / "other.png", tissue_image(16, 16))
    with pytest.raises(StainvirtError, match=r"6 of 7 source image\(s\) have no target") as err:
        match_pairs(tmp_path / "src", tmp_path / "tgt")
    assert "s1, s2, s3, s4, s5 and 1 more" in str(err.value)
    assert "without a source: other" in str(err.value)


def test_bad_inputs_fail_with_clear_messages(run_dir, unpaired, tmp_path):
    source, target = unpaired
    save(tmp_path / "big" / "a0.png", tissue_image(32, 32))
    (tmp_path / "empty").mkdir()
    save(tmp_path / "dup" / "a0.png", tissue_image(16, 16))
    save(tmp_path / "dup" / "a0.jpg", tissue_image(16, 16))
    half_run = RunDir(tmp_path / "half")
    half_run.save_config(preset("tiny"))
    shutil.copy(RunDir(run_dir).generator_path("A2B"), half_run.path)
    cases = [
        (dict(direction="C2D"), "unknown direction 'C2D'"),
        (dict(paired=True, target=None), "--paired needs --target"),
        (dict(source=tmp_path / "empty"), "no images found"),
        (dict(source=tmp_path / "nowhere"), "folder not found"),
        (dict(paired=True, source=tmp_path / "big", target=source),
         "differ in size: a0.png 32x32 vs a0.png 64x64"),
        (dict(paired=True, source=tmp_path / "dup"), "have the same name"),
        (dict(model=tmp_path / "no_run"), "run folder not found"),
        (dict(model=half_run.path), r"G_BA.keras: model not found"),  # the cycle needs both
    ]
    for changes, message in cases:
        kwargs = dict(model=run_dir, direction="A2B", source=source, target=target,
                      progress=False) | changes
        with pytest.raises(StainvirtError, match=message):
            evaluate(kwargs.pop("model"), kwargs.pop("direction"), kwargs.pop("source"), **kwargs)


def test_cli_end_to_end_as_a_user_runs_it(run_dir, mapped, tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "stainvirt", "evaluate", "--direction", "A2B", "--model",
         str(run_dir), "--source", str(mapped[0]), "--target", str(mapped[1]), "--paired",
         "--baselines", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "evaluated 4 image(s), A2B, paired" in proc.stdout and "| Reinhard |" in proc.stdout
    report = strict_json(out / "report.json")
    assert report["summary"]["reinhard"]["psnr"] > report["summary"]["identity"]["psnr"]
    assert "| model |" in (out / "report.md").read_text()
    assert (out / FIGURE_PNG).stat().st_size > 0


def test_cli_unpaired_and_its_errors(run_dir, unpaired, tmp_path, capsys):
    source, target = unpaired
    args = ["evaluate", "--direction", "a2b", "--model", str(run_dir), "--source", str(source)]
    assert main(["-q", *args, "--target", str(target), "--baselines",
                 "--out", str(tmp_path / "out")]) == 0
    assert "verdict:" in capsys.readouterr().out
    assert (tmp_path / "out" / "report.md").is_file()

    (tmp_path / "file").write_text("")
    for extra, message in (
        (["--target", str(target), "--paired", "--out", str(tmp_path / "x")], "no target"),
        (["--out", str(tmp_path / "file" / "sub")], "cannot write there"),
        (["--figure-images", "-1", "--out", str(tmp_path / "x")], "--figure-images"),
    ):
        assert main([*args, *extra]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
