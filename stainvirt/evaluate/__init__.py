"""Numbers for ``stainvirt evaluate``: paired and unpaired metrics, baselines and the report.

- ``metrics``: PSNR/SSIM as BCI and MIST report them, stain-channel correlation
  and DAB-positive Dice, and unpaired colour/stain distribution distances.
- ``baselines``: identity and Reinhard colour transfer, the scores to beat.
- ``fid``: FID and KID between image sets on InceptionV3 features, with the
  weights taken from Keras's cache or a file, never downloaded. (The package
  exports ``fid_kid``, not ``fid``, which would hide the module of that name.)
- ``runner``: :func:`evaluate` translates a folder with a trained model and
  scores it, paired or unpaired, beside the baselines.
- ``report``: :func:`write_report` writes ``report.json``, ``report.md`` and a
  figure of the worst and best images.

Examples:
    >>> from stainvirt.evaluate import evaluate, write_report
    >>> result = evaluate("runs/demo", "A2B", "bci/HE/test", target="bci/IHC/test",
    ...                   paired=True, baselines=True)
    >>> write_report(result, "out/evaluate")  # doctest: +SKIP
"""

from stainvirt.evaluate.fid import fid_kid, inception_features, load_inception
from stainvirt.evaluate.report import write_report
from stainvirt.evaluate.runner import Evaluation, evaluate
from stainvirt.pairing import match_pairs

__all__ = [
    "Evaluation",
    "evaluate",
    "fid_kid",
    "inception_features",
    "load_inception",
    "match_pairs",
    "write_report",
]
