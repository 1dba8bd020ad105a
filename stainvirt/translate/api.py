"""The :class:`Translator`: one trained generator applied to arrays, files and folders.

Examples:
    >>> t = Translator.from_run("runs/demo", "A2B")
    >>> ihc = t.translate_array(he_rgb)                    # numpy in, numpy out
    >>> t.translate_file("slide7.svs", "out/")             # out/slide7_A2B.ome.tif
    >>> report = t.translate_paths(["data/sample/testA"], "out/")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stainvirt.errors import StainvirtError
from stainvirt.io.atomic import writable_folder
from stainvirt.io.images import TIFF_SUFFIXES, expand_inputs, to_rgb_uint8
from stainvirt.io.regions import ArrayRegions, Regions
from stainvirt.io.scaling import to_uint8, to_unit
from stainvirt.io.slide import NATIVE, Resolution, Slide
from stainvirt.io.slides import image_size, is_slide, open_slide
from stainvirt.rundir import RunDir, check_direction
from stainvirt.tissue import TissueMap, is_tissue, thumbnail_tissue_mask
from stainvirt.translate.tiling import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, Tiling, pad_to
from stainvirt.translate.writers import write_png, write_tiff

log = logging.getLogger("stainvirt")

FORMATS = ("png", "tiff")
# A PNG is written from one array in memory; beyond this, stream a TIFF instead.
PNG_MAX_PIXELS = 100_000_000
# --skip-background copies a tile through when less than this fraction is tissue.
SKIP_BELOW_TISSUE = 0.01


@dataclass
class TranslationReport:
    """What :meth:`Translator.translate_paths` did."""

    outputs: dict[Path, Path] = field(default_factory=dict)
    """Each translated input and the file its translation went to."""
    failures: list[tuple[Path, str]] = field(default_factory=list)
    """``(input, error message)`` of every image that could not be translated."""
    megapixels: float = 0.0
    glass_megapixels: float = 0.0
    """Of ``megapixels``, the part in tiles copied through as glass instead of translated."""
    seconds: float = 0.0


class Translator:
    """Translate images of any size with one generator, tile by tile where needed.

    Args:
        generator: A Keras model mapping ``(N, H, W, 3)`` in [-1, 1] to the same shape.
        tiling: Tile size, overlap and the sizes the generator accepts.
        direction: ``A2B`` or ``B2A``; names the outputs.
        batch_size: Tiles per generator call; default 8 on a GPU, 1 on a CPU
            (where larger batches are slower).
        skip_background: Copy tiles that are almost all glass through unchanged:
            None (default) for slides and TIFFs, judged on a thumbnail's tissue
            mask; True for every image (others judged on the tile's pixels);
            False for none.
        resolution: The resolution slides are read at (default: each file's own).
            Outputs have the size of the input at that resolution.
    """

    def __init__(
        self,
        generator: Any,
        tiling: Tiling,
        *,
        direction: str = "A2B",
        batch_size: int | None = None,
        skip_background: bool | None = None,
        resolution: Resolution = NATIVE,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise StainvirtError(f"batch size must be at least 1, not {batch_size} (--batch-size)")
        self.generator = generator
        self.tiling = tiling
        self.direction = check_direction(direction)
        self.batch_size = batch_size or _default_batch_size()
        self.skip_background = skip_background
        self.resolution = resolution

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        direction: str,
        *,
        tile_size: int = DEFAULT_TILE_SIZE,
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int | None = None,
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
            skip_background: Copy glass through (see :class:`Translator`).
            resolution: The resolution slides are read at; default: the one the
                run was trained at (slides without a pixel size, and PNG/JPEG,
                are then read at their own, with a warning for slides), or each
                file's own if the run recorded none.

        Raises:
            StainvirtError: for an unknown direction, a tiling that does not fit the
                generator, or a run folder without a loadable model and config.
        """
        direction = check_direction(direction)
        # Check everything cheap before the slow model load.
        run = RunDir(run_dir)
        tiling = Tiling.for_config(run.load_config(), tile_size, overlap)
        if resolution is None:
            resolution = run.training_resolution() or NATIVE
        return cls(
            run.load_generator(direction),
            tiling,
            direction=direction,
            batch_size=batch_size,
            skip_background=skip_background,
            resolution=resolution,
        )

    def translate_array(self, rgb: np.ndarray) -> np.ndarray:
        """Translate an image held in memory.

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB (grey, RGBA and 16-bit are converted).

        Returns:
            The translation, uint8 RGB of the same height and width.
        """
        image = ArrayRegions(to_rgb_uint8(rgb, "array"))
        glass = _glass_by_pixels if self.skip_background else None
        return np.concatenate(list(self._bands(image, is_glass=glass)))

    def read(self, path: str | Path) -> np.ndarray:
        """A whole image as uint8 RGB, read at the resolution it would be translated at."""
        path = Path(path)
        with open_slide(path) as slide:
            image = slide.regions() if self._own_size(path) else self.resolution.regions(slide)
            return image.read(0, 0, image.height, image.width)

    def translate_file(
        self,
        path: str | Path,
        out_dir: str | Path,
        fmt: str | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> Path:
        """Translate one image file into ``out_dir``.

        Args:
            path: PNG, JPEG, TIFF or SVS (level 0 of a pyramid).
            out_dir: Folder of the output, created if needed.
            fmt: ``png`` or ``tiff`` (pyramidal OME-TIFF); default ``tiff`` for
                TIFF and SVS inputs, ``png`` otherwise.
            progress: Called with the number of tiles done after each tile row.

        Returns:
            The output file, e.g. ``out_dir/slide7_A2B.ome.tif``.

        Raises:
            StainvirtError: if the image cannot be read, is too large for PNG, or
                the output would overwrite the input.
        """
        path = Path(path)
        out = self.output_path(path, out_dir, fmt)
        _check_output(out, {path.resolve()})
        return self._write(path, out, self._size(path)[2], progress)

    def translate_paths(
        self,
        inputs: Iterable[str | Path],
        out_dir: str | Path,
        fmt: str | None = None,
        progress: bool = True,
    ) -> TranslationReport:
        """Translate files, folders (recursively) and glob patterns into ``out_dir``.

        Images found in a folder keep their sub-folder below ``out_dir``; files and
        glob matches go straight into it. An image that fails is logged and
        reported; the others are still translated.

        Args:
            inputs: Image files, folders or glob patterns.
            out_dir: Output folder, created if needed.
            fmt: ``png``, ``tiff`` or None (see :meth:`translate_file`).
            progress: Show a progress bar over the tiles of all images.

        Returns:
            Outputs written, failures, megapixels and seconds.

        Raises:
            StainvirtError: if an input matches nothing or ``out_dir`` cannot be written.
        """
        from tqdm import tqdm

        start = time.perf_counter()
        targets = self._targets(inputs, Path(out_dir), fmt)
        writable_folder(out_dir)
        report = TranslationReport()
        inputs_resolved, claimed, sizes = {p.resolve() for p in targets}, set(), {}
        for path, out in targets.items():
            try:
                _check_output(out, inputs_resolved, claimed)
                claimed.add(out)
                sizes[path] = self._size(path)
            except StainvirtError as exc:
                self._failed(report, path, exc)
        total = sum(self.tiling.count(height, width) for height, width, _ in sizes.values())
        with tqdm(total=total, unit="tile", disable=not progress, dynamic_ncols=True) as bar:
            for i, (path, (height, width, mpp)) in enumerate(sizes.items(), start=1):
                bar.set_postfix_str(f"image {i}/{len(sizes)}: {path.name}")
                tally = _Tally()
                try:
                    report.outputs[path] = self._write(path, targets[path], mpp, bar.update, tally)
                except StainvirtError as exc:
                    self._failed(report, path, exc)
                    continue
                report.megapixels += height * width / 1e6
                report.glass_megapixels += height * width / 1e6 * tally.glass / tally.tiles
        report.seconds = time.perf_counter() - start
        return report

    def output_path(self, path: str | Path, out_dir: str | Path, fmt: str | None = None) -> Path:
        """Where :meth:`translate_file` writes the translation of ``path``.

        Examples:
            >>> Translator(g, Tiling(), direction="A2B").output_path("a/slide7.svs", "out")
            PosixPath('out/slide7_A2B.ome.tif')
        """
        path = Path(path)
        fmt = fmt or ("tiff" if path.suffix.lower() in TIFF_SUFFIXES else "png")
        if fmt not in FORMATS:
            raise StainvirtError(f"unknown output format {fmt!r}; use png or tiff (--format)")
        stem = path.stem.removesuffix(".ome")
        suffix = ".png" if fmt == "png" else ".ome.tif"
        return Path(out_dir) / f"{stem}_{self.direction}{suffix}"

    def _targets(
        self, inputs: Iterable[str | Path], out_dir: Path, fmt: str | None
    ) -> dict[Path, Path]:
        """Each input image and its output path."""
        targets: dict[Path, Path] = {}
        for item in inputs:
            folder = Path(item) if Path(item).is_dir() else None
            for path in expand_inputs([item]):
                below = out_dir / path.parent.relative_to(folder) if folder else out_dir
                targets.setdefault(path, self.output_path(path, below, fmt))
        return targets

    def _own_size(self, path: Path) -> bool:
        """Whether ``path`` is a PNG/JPEG translated at its own size (no pixel size to go by)."""
        return not is_slide(path) and (self.resolution == NATIVE or not self.resolution.required)

    def _size(self, path: Path) -> tuple[int, int, float | None]:
        """``(height, width, mpp)`` of ``path`` at the resolution it is translated at."""
        if self._own_size(path):
            return (*image_size(path), None)  # from the header
        with open_slide(path) as slide:
            regions = self.resolution.regions(slide)
            return regions.height, regions.width, regions.mpp

    def _write(
        self,
        path: Path,
        out: Path,
        mpp: float | None,
        progress: Callable[[int], object] | None = None,
        tally: _Tally | None = None,
    ) -> Path:
        """Translate ``path``, read at ``mpp`` (None: level 0), into ``out`` (PNG or OME-TIFF)."""
        with open_slide(path) as slide:
            image = slide.regions(mpp)
            bands = self._bands(image, progress, self._glass_test(slide, image), tally)
            if out.suffix == ".png":
                if image.height * image.width > PNG_MAX_PIXELS:
                    raise StainvirtError(
                        f"{path}: {image.height}x{image.width} is too large for a PNG output; "
                        "use --format tiff (written tile by tile)"
                    )
                return write_png(out, np.concatenate(list(bands)))
            return write_tiff(out, image.height, image.width, bands, image.mpp)

    def _bands(
        self,
        image: Regions,
        progress: Callable[[int], object] | None = None,
        is_glass: Callable[[np.ndarray, int, int], bool] | None = None,
        tally: _Tally | None = None,
    ) -> Iterator[np.ndarray]:
        """The translation as uint8 row bands, top to bottom, one per row of tiles.

        Only one row of tiles and one band of blended output are in memory at a time.
        ``is_glass(tile, top, left)`` picks the tiles copied through untranslated.
        """
        tally = tally or _Tally()
        rows, cols = self.tiling.plan(image.height), self.tiling.plan(image.width)
        blended = np.zeros((rows.length, cols.extent, 3), np.float32)
        for r, top in enumerate(rows.starts):
            band = image.read(top, 0, min(rows.length, image.height - top), image.width)
            band = pad_to(band, rows.length, cols.extent)
            tiles = [band[:, left : left + cols.length] for left in cols.starts]
            glass = [bool(is_glass and is_glass(t, top, left))
                     for t, left in zip(tiles, cols.starts, strict=True)]
            tally.tiles, tally.glass = tally.tiles + len(tiles), tally.glass + sum(glass)
            for c, out in self._outputs(tiles, glass):
                weight = rows.weights[r][:, None, None] * cols.weights[c][None, :, None]
                blended[:, cols.starts[c] : cols.starts[c] + cols.length] += weight * out
            if progress:
                progress(len(tiles))
            if r + 1 < len(rows.starts):
                done = rows.starts[r + 1] - top  # no later tile reaches these rows
                yield to_uint8(blended[:done, : image.width])
                blended[: rows.length - done] = blended[done:]
                blended[rows.length - done :] = 0.0
            else:
                yield to_uint8(blended[: image.height - top, : image.width])

    def _outputs(
        self, tiles: Sequence[np.ndarray], glass: Sequence[bool]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, output in [-1, 1])`` of each uint8 tile, batched through the generator.

        Glass tiles come back as they are.
        """
        todo = []
        for i, tile in enumerate(tiles):
            if glass[i]:
                yield i, to_unit(tile)
            else:
                todo.append(i)
        for k in range(0, len(todo), self.batch_size):
            chunk = todo[k : k + self.batch_size]
            batch = to_unit(np.stack([tiles[i] for i in chunk]))
            yield from zip(chunk, np.asarray(self.generator.predict_on_batch(batch)), strict=True)

    def _glass_test(
        self, slide: Slide, image: Regions
    ) -> Callable[[np.ndarray, int, int], bool] | None:
        """How to tell glass tiles of this image, or None to translate every tile."""
        if self.skip_background is False:
            return None
        if is_slide(slide.path):
            tissue = TissueMap(thumbnail_tissue_mask(slide.thumbnail()), image.height, image.width)
            side = self.tiling.tile_size
            return lambda _, top, left: tissue.fraction(top, left, side, side) < SKIP_BELOW_TISSUE
        return _glass_by_pixels if self.skip_background else None

    @staticmethod
    def _failed(report: TranslationReport, path: Path, exc: StainvirtError) -> None:
        log.error("%s", exc)
        report.failures.append((path, str(exc)))


def _glass_by_pixels(tile: np.ndarray, top: int, left: int) -> bool:
    """A tile that is almost all glass by the per-pixel tissue test."""
    return not is_tissue(tile, SKIP_BELOW_TISSUE)


@dataclass
class _Tally:
    """Tiles of one image: all of them, and those copied through as glass."""

    tiles: int = 0
    glass: int = 0


def _check_output(out: Path, inputs: set[Path], claimed: set[Path] = frozenset()) -> None:
    """Refuse to overwrite an input (``inputs`` are resolved) or another input's output."""
    if out.resolve() in inputs:
        raise StainvirtError(f"{out}: the output would overwrite an input; choose another --out")
    if out in claimed:
        raise StainvirtError(
            f"{out}: another input of the same name translates to this file; rename one "
            "of them or translate them into separate --out folders"
        )


def _default_batch_size() -> int:
    import tensorflow as tf

    return 8 if tf.config.list_physical_devices("GPU") else 1
