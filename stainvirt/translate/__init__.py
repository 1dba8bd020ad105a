"""Translate images of any size with a trained generator: ``stainvirt translate``.

``Translator.from_run(run_dir, "A2B")`` loads a generator once; it translates
numpy arrays, files and folders, tile by tile with blended overlaps where an
image is larger than one tile, and writes PNG or pyramidal OME-TIFF outputs.
``write_figure`` draws input, translation and round trip side by side.
"""

from stainvirt.translate.api import TranslationReport, Translator
from stainvirt.translate.figure import write_figure
from stainvirt.translate.tiling import Tiling, seam_ratio

__all__ = [
    "Tiling",
    "TranslationReport",
    "Translator",
    "seam_ratio",
    "write_figure",
]
