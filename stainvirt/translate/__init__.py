"""Translate images of any size with a trained generator: ``stainvirt translate``.

``Translator.from_run(run_dir, "A2B")`` loads a generator once; it translates
numpy arrays, files and folders, tile by tile with blended overlaps where an
image is larger than one tile, and writes PNG or pyramidal OME-TIFF outputs.
``write_figure`` draws input, translation and round trip side by side.

A run on domains other than 8-bit RGB (greyscale or multi-channel, 16-bit or
float) reads, scales and writes them in their own kind (``native``); TIFF stacks
of slices are translated slice by slice, with orthogonal views (``volume``).
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
