"""The :class:`Translator`: one trained generator applied to arrays, files and folders.

Examples:
    >>> t = Translator.from_run("runs/demo", "A2B")
    >>> ihc = t.translate_array(he_rgb)                    # numpy in, numpy out
    >>> t.translate_file("slide7.svs", "out/")             # out/slide7_A2B.ome.tif
    >>> report = t.translate_paths(["data/sample/testA"], "out/")
    >>> t.translate_file("stack.tif", "out/")              # out/stack_A2B.ome.tif, a stack

A run on a domain that is not 8-bit RGB (:mod:`stainvirt.translate.native`)
reads its inputs as stored, scales them with its recorded range and writes the
output domain's kind; stacks of slices go through :mod:`stainvirt.translate.volume`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stainvirt.devices import gpu_visible
from stainvirt.domain import RGB, Domain
from stainvirt.errors import StainvirtError
from stainvirt.io.images import TIFF_SUFFIXES, to_rgb_uint8
from stainvirt.io.regions import ArrayRegions, Regions
from stainvirt.io.slide import NATIVE, Resolution, Slide
from stainvirt.io.slides import image_size, is_slide, open_slide
from stainvirt.rundir import RunDir, check_direction
from stainvirt.tissue import TissueMap, is_tissue, thumbnail_tissue_mask
from stainvirt.translate import batch, native, volume
from stainvirt.translate.batch import TranslationReport
from stainvirt.translate.precision import resolve_precision, with_precision
from stainvirt.translate.tiling import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE_SIZE,
    Tally,
    Tiling,
    blended_bands,
)

FORMATS = ("png", "tiff")
# --skip-background copies a tile through when less than this fraction is tissue.
SKIP_BELOW_TISSUE = 0.01


class Translator:
    """Translate images of any size with one generator, tile by tile where needed.

    Args:
        generator: A Keras model mapping ``(N, H, W, C_in)`` in [-1, 1] to
            ``(N, H, W, C_out)`` in [-1, 1].
        tiling: Tile size, overlap and the sizes the generator accepts.
        direction: ``A2B`` or ``B2A``; names the outputs.
        batch_size: Tiles per generator call; default 8 on a GPU, 1 on a CPU
            (where larger batches are slower).
        precision: ``float16`` (Keras's ``mixed_float16`` policy: half the
            memory, faster on GPUs with tensor cores, slow on a CPU),
            ``float32``, or ``auto`` (default: float16 when TensorFlow sees a
            GPU, else float32). The generator is rebuilt for it if needed.
        skip_background: Copy tiles that are almost all glass through unchanged:
            None (default) for slides and TIFFs, judged on a thumbnail's tissue
            mask; True for every image (others judged on the tile's pixels);
            False for none.
        resolution: The resolution slides are read at (default: each file's own).
            Outputs have the size of the input at that resolution.
        source: The input domain (default 8-bit RGB); others are read as stored
            and scaled with its range.
        target: The output domain, whose pixel type and range outputs are written in.
    """

    def __init__(
        self,
        generator: Any,
        tiling: Tiling,
        *,
        direction: str = "A2B",
        batch_size: int | None = None,
        precision: str = "auto",
        skip_background: bool | None = None,
        resolution: Resolution = NATIVE,
        source: Domain = RGB,
        target: Domain = RGB,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise StainvirtError(f"batch size must be at least 1, not {batch_size} (--batch-size)")
        self.precision = resolve_precision(precision)
        self.generator = with_precision(generator, self.precision)
        self.tiling = tiling
        self.direction = check_direction(direction)
        self.batch_size = batch_size or _default_batch_size()
        self.skip_background = skip_background
        self.resolution = resolution
        self.source, self.target = source, target
        self.codecs = (native.codec(source), native.codec(target))

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        direction: str,
        *,
        tile_size: int = DEFAULT_TILE_SIZE,
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int | None = None,
        precision: str = "auto",
        skip_background: bool | None = None,
        resolution: Resolution | None = None,
    ) -> Translator:
        """Load the generator for ``direction`` from a run folder written by ``stainvirt train``.

        Args:
            run_dir: Folder with ``config.json`` and ``G_AB.keras`` / ``G_BA.keras``.
            direction: ``A2B`` (H&E -> IHC) or ``B2A`` (IHC -> H&E).
            tile_size: Side of the tiles large images are cut into.
            overlap: Pixels neighbouring tiles share and cross-fade over.
            batch_size: Tiles per generator call (default: 8 on a GPU, 1 on a CPU).
            precision: ``auto``, ``float16`` or ``float32`` (see :class:`Translator`).
            skip_background: Copy glass through (see :class:`Translator`).
            resolution: The resolution slides are read at; default: the one the
                run was trained at (slides without a pixel size, and PNG/JPEG,
                are then read at their own, with a warning for slides), or each
                file's own if the run recorded none.

        Raises:
            StainvirtError: for an unknown direction or precision, a tiling that does
                not fit the generator, or a run folder without a loadable model and config.
        """
        direction = check_direction(direction)
        precision = resolve_precision(precision)
        # Check everything cheap before the slow model load.
        run = RunDir(run_dir)
        tiling = Tiling.for_config(run.load_config(), tile_size, overlap)
        if resolution is None:
            resolution = run.training_resolution() or NATIVE
        domains = run.domains()
        source, target = ("A", "B") if direction == "A2B" else ("B", "A")
        return cls(
            run.load_generator(direction),
            tiling,
            direction=direction,
            batch_size=batch_size,
            precision=precision,
            skip_background=skip_background,
            resolution=resolution,
            source=domains[source],
            target=domains[target],
        )

    @property
    def output_channels(self) -> int:
        """Channels of the generator's output (the output domain's)."""
        shape = getattr(self.generator, "output_shape", None)
        return int(shape[-1]) if shape else self.target.channels

    def translate_array(self, image: np.ndarray) -> np.ndarray:
        """Translate an image held in memory.

        Args:
            image: For an RGB run, ``(H, W, 3)`` uint8 RGB (grey, RGBA and 16-bit
                are converted); otherwise ``(H, W[, C])`` pixels of the input domain.

        Returns:
            The translation, of the same height and width: uint8 RGB for an RGB
            output domain, else ``(H, W, C)`` pixels of the output domain.
        """
        if not self.source.is_rgb:
            return self.translate_pixels(native.as_pixels(image, self.source))
        glass = _glass_by_pixels if self.skip_background and self._glass_allowed else None
        regions = ArrayRegions(to_rgb_uint8(image, "array"))
        return np.concatenate(list(self._bands(regions, is_glass=glass)))

    def translate_pixels(
        self,
        pixels: np.ndarray,
        progress: Callable[[int], object] | None = None,
        tally: Tally | None = None,
    ) -> np.ndarray:
        """Translate ``(H, W, C)`` pixels of the input domain as they are (no glass skipping).

        Returns:
            ``(H, W, C_out)`` pixels of the output domain.
        """
        return np.concatenate(list(self._bands(ArrayRegions(pixels), progress, tally=tally)))

    def read(self, path: str | Path, domain: Domain | None = None) -> np.ndarray:
        """A whole 2D image of ``domain`` (default: the input's), as it would be translated.

        RGB is read as uint8 at the resolution of translation; other domains as
        stored, ``(H, W, C)``, checked against the domain.
        """
        path, domain = Path(path), domain or self.source
        if not domain.is_rgb:
            return native.read_plane(path, domain)
        with open_slide(path) as slide:
            image = slide.regions() if self._own_size(path) else self.resolution.regions(slide)
            return image.read(0, 0, image.height, image.width)

    def translate_file(
        self,
        path: str | Path,
        out_dir: str | Path,
        fmt: str | None = None,
        progress: Callable[[int], object] | None = None,
        views: bool = True,
    ) -> Path:
        """Translate one image file (or stack) into ``out_dir``.

        Args:
            path: PNG, JPEG, TIFF or SVS (level 0 of a pyramid); a TIFF stack of
                slices is translated slice by slice into an OME-TIFF stack.
            out_dir: Folder of the output, created if needed.
            fmt: ``png`` or ``tiff`` (OME-TIFF: pyramidal for 8-bit RGB); default
                ``tiff`` for TIFF and SVS inputs and outputs that are not 8-bit
                RGB, ``png`` otherwise.
            progress: Called with the number of tiles done after each tile row.
            views: For a stack, also write its orthogonal views beside the output
                (``NAME_views.png``).

        Returns:
            The output file, e.g. ``out_dir/slide7_A2B.ome.tif``.

        Raises:
            StainvirtError: if the image cannot be read, is too large for PNG, or
                the output would overwrite the input.
        """
        path = Path(path)
        out = self.output_path(path, out_dir, fmt)
        batch.check_output_path(out, {path.resolve()})
        return self._write(path, out, self._size(path)[3], progress, views=views)[0]

    def translate_paths(
        self,
        inputs: Iterable[str | Path],
        out_dir: str | Path,
        fmt: str | None = None,
        progress: bool = True,
        views: bool = True,
    ) -> TranslationReport:
        """Translate files, folders (recursively) and glob patterns into ``out_dir``.

        Images found in a folder keep their sub-folder below ``out_dir``; files and
        glob matches go straight into it. An image that fails is logged and
        reported; the others are still translated.

        Args:
            inputs: Image files, folders or glob patterns.
            out_dir: Output folder, created if needed.
            fmt: ``png``, ``tiff`` or None (see :meth:`translate_file`).
            progress: Show a progress bar over the tiles of all images (and the
                slice a stack is at).
            views: Also write each stack's orthogonal views beside its output.

        Returns:
            Outputs written, views figures, failures, megapixels and seconds.

        Raises:
            StainvirtError: if an input matches nothing, ``out_dir`` cannot be
                written, or (runs on a domain other than RGB) an input has
                another channel count than the run's input domain.
        """
        return batch.translate_paths(self, inputs, out_dir, fmt, progress, views)

    def output_path(self, path: str | Path, out_dir: str | Path, fmt: str | None = None) -> Path:
        """Where :meth:`translate_file` writes the translation of ``path``.

        Examples:
            >>> Translator(g, Tiling(), direction="A2B").output_path("a/slide7.svs", "out")
            PosixPath('out/slide7_A2B.ome.tif')
        """
        path = Path(path)
        tiff = path.suffix.lower() in TIFF_SUFFIXES or not self.target.is_rgb
        fmt = fmt or ("tiff" if tiff else "png")
        if fmt not in FORMATS:
            raise StainvirtError(f"unknown output format {fmt!r}; use png or tiff (--format)")
        if fmt == "png":
            native.check_png(self.target)
        stem = path.stem.removesuffix(".ome")
        suffix = ".png" if fmt == "png" else ".ome.tif"
        return Path(out_dir) / f"{stem}_{self.direction}{suffix}"

    def _own_size(self, path: Path) -> bool:
        """Whether ``path`` is a PNG/JPEG translated at its own size (no pixel size to go by)."""
        return not is_slide(path) and (self.resolution == NATIVE or not self.resolution.required)

    def _size(self, path: Path) -> tuple[int, int, int, float | None]:
        """``(slices, height, width, mpp)`` of ``path`` at the resolution it is translated at."""
        if self._reads_natively(path):
            return (*native.stack_shape(path), None)
        if self._own_size(path):
            return (1, *image_size(path), None)  # from the header
        with open_slide(path) as slide:
            regions = self.resolution.regions(slide)
            return 1, regions.height, regions.width, regions.mpp

    def _reads_natively(self, path: Path) -> bool:
        """Whether ``path`` is read as stored: a run on another domain than RGB, or a stack."""
        return not self.source.is_rgb or native.is_stack(path)

    def _write(
        self,
        path: Path,
        out: Path,
        mpp: float | None,
        progress: Callable[[int], object] | None = None,
        tally: Tally | None = None,
        views: bool = True,
        status: Callable[[str], object] | None = None,
    ) -> tuple[Path, Path | None]:
        """Translate ``path``, read at ``mpp`` (None: level 0), into ``out``.

        Returns:
            ``out``, and the views figure written for a stack (else None).
        """
        if self._reads_natively(path):
            return volume.translate_file(self, path, out, progress=progress, tally=tally,
                                         views=views, status=status)
        with open_slide(path) as slide:
            image = slide.regions(mpp)
            if out.suffix == ".png":
                native.check_png_size(image.height, image.width, path)
            bands = self._bands(image, progress, self._glass_test(slide, image), tally)
            shape = (image.height, image.width, self.output_channels)
            return native.write_bands(out, bands, shape, self.target, image.mpp), None

    def _bands(
        self,
        image: Regions,
        progress: Callable[[int], object] | None = None,
        is_glass: Callable[[np.ndarray, int, int], bool] | None = None,
        tally: Tally | None = None,
    ) -> Iterator[np.ndarray]:
        """The translation as row bands of output pixels (see :func:`blended_bands`)."""
        return blended_bands(image, self.tiling, self.generator.predict_on_batch, self.codecs,
                             self.batch_size, progress=progress, is_glass=is_glass, tally=tally)

    @property
    def _glass_allowed(self) -> bool:
        """Glass is told and copied through only between two RGB domains."""
        return self.source.is_rgb and self.target.is_rgb

    def _glass_test(
        self, slide: Slide, image: Regions
    ) -> Callable[[np.ndarray, int, int], bool] | None:
        """How to tell glass tiles of this image, or None to translate every tile."""
        if self.skip_background is False or not self._glass_allowed:
            return None
        if is_slide(slide.path):
            tissue = TissueMap(thumbnail_tissue_mask(slide.thumbnail()), image.height, image.width)
            side = self.tiling.tile_size
            return lambda _, top, left: tissue.fraction(top, left, side, side) < SKIP_BELOW_TISSUE
        return _glass_by_pixels if self.skip_background else None

def _glass_by_pixels(tile: np.ndarray, top: int, left: int) -> bool:
    """A tile that is almost all glass by the per-pixel tissue test."""
    return not is_tissue(tile, SKIP_BELOW_TISSUE)


def _default_batch_size() -> int:
    return 8 if gpu_visible() else 1
