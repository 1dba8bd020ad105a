"""Numbers for ``stainvirt evaluate``: paired and unpaired metrics, and baselines.

- ``metrics``: PSNR/SSIM as BCI and MIST report them, stain-channel correlation
  and DAB-positive Dice, and unpaired colour/stain distribution distances.
- ``baselines``: identity and Reinhard colour transfer, the scores to beat.
"""
