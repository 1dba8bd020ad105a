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
from stainvirt.io.scaling import to_uint8, to_unit
from stainvirt.rundir import RunDir, check_direction
from stainvirt.tissue import is_tissue
from stainvirt.translate.readers import ArrayRegions, Regions, image_size, open_regions
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
    seconds: float = 0.0


class Translator:
    """Translate images of any size with one generator, tile by tile where needed.

    Args:
        generator: A Keras model mapping ``(N, H, W, 3)`` in [-1, 1] to the same shape.
        tiling: Tile size, overlap and the sizes the generator accepts.
        direction: ``A2B`` or ``B2A``; names the outputs.
        batch_size: Tiles per generator call; default 8 on a GPU, 1 on a CPU
            (where larger batches are slower).
        skip_background: Copy tiles that are almost all glass through unchanged.
    """

    def __init__(
        self,
        generator: Any,
        tiling: Tiling,
        *,
        direction: str = "A2B",
        batch_size: int | None = None,
        skip_background: bool = False,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise StainvirtError(f"batch size must be at least 1, not {batch_size} (--batch-size)")
        self.generator = generator
        self.tiling = tiling
        self.direction = check_direction(direction)
        self.batch_size = batch_size or _default_batch_size()
        self.skip_background = skip_background

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        direction: str,
        *,
        tile_size: int = DEFAULT_TILE_SIZE,
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int | None = None,
        skip_background: bool = False,
    ) -> Translator:
        """Load the generator for ``direction`` from a run folder written by ``stainvirt train``.

        Args:
            run_dir: Folder with ``config.json`` and ``G_AB.keras`` / ``G_BA.keras``.
            direction: ``A2B`` (H&E -> IHC) or ``B2A`` (IHC -> H&E).
            tile_size: Side of the tiles large images are cut into.
            overlap: Pixels neighbouring tiles share and cross-fade over.
            batch_size: Tiles per generator call (default: 8 on a GPU, 1 on a CPU).
            skip_background: Copy tiles that are almost all glass through unchanged.

        Raises:
            StainvirtError: for an unknown direction, a tiling that does not fit the
                generator, or a run folder without a loadable model and config.
        """
        direction = check_direction(direction)
        # Check everything cheap before the slow model load.
        run = RunDir(run_dir)
        tiling = Tiling.for_config(run.load_config(), tile_size, overlap)
        return cls(
            run.load_generator(direction),
            tiling,
            direction=direction,
            batch_size=batch_size,
            skip_background=skip_background,
        )

    def translate_array(self, rgb: np.ndarray) -> np.ndarray:
        """Translate an image held in memory.

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB (grey, RGBA and 16-bit are converted).

        Returns:
            The translation, uint8 RGB of the same height and width.
        """
        image = ArrayRegions(to_rgb_uint8(rgb, "array"))
        return np.concatenate(list(self._bands(image)))

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
        return self._write(path, out, progress)

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
                sizes[path] = image_size(path)
            except StainvirtError as exc:
                self._failed(report, path, exc)
        total = sum(self.tiling.count(*size) for size in sizes.values())
        with tqdm(total=total, unit="tile", disable=not progress, dynamic_ncols=True) as bar:
            for i, (path, (height, width)) in enumerate(sizes.items(), start=1):
                bar.set_postfix_str(f"image {i}/{len(sizes)}: {path.name}")
                try:
                    report.outputs[path] = self._write(path, targets[path], bar.update)
                    report.megapixels += height * width / 1e6
                except StainvirtError as exc:
                    self._failed(report, path, exc)
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

    def _write(self, path: Path, out: Path, progress: Callable[[int], object] | None) -> Path:
        """Translate ``path`` into ``out`` (PNG or OME-TIFF by its suffix)."""
        with open_regions(path) as image:
            bands = self._bands(image, progress)
            if out.suffix == ".png":
                if image.height * image.width > PNG_MAX_PIXELS:
                    raise StainvirtError(
                        f"{path}: {image.height}x{image.width} is too large for a PNG output; "
                        "use --format tiff (written tile by tile)"
                    )
                return write_png(out, np.concatenate(list(bands)))
            return write_tiff(out, image.height, image.width, bands, image.mpp)

    def _bands(
        self, image: Regions, progress: Callable[[int], object] | None = None
    ) -> Iterator[np.ndarray]:
        """The translation as uint8 row bands, top to bottom, one per row of tiles.

        Only one row of tiles and one band of blended output are in memory at a time.
        """
        rows, cols = self.tiling.plan(image.height), self.tiling.plan(image.width)
        blended = np.zeros((rows.length, cols.extent, 3), np.float32)
        for r, top in enumerate(rows.starts):
            band = image.read(top, 0, min(rows.length, image.height - top), image.width)
            band = pad_to(band, rows.length, cols.extent)
            tiles = [band[:, left : left + cols.length] for left in cols.starts]
            for c, out in self._outputs(tiles):
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

    def _outputs(self, tiles: Sequence[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, output in [-1, 1])`` of each uint8 tile, batched through the generator."""
        todo = []
        for i, tile in enumerate(tiles):
            if self.skip_background and not is_tissue(tile, SKIP_BELOW_TISSUE):
                yield i, to_unit(tile)
            else:
                todo.append(i)
        for k in range(0, len(todo), self.batch_size):
            chunk = todo[k : k + self.batch_size]
            batch = to_unit(np.stack([tiles[i] for i in chunk]))
            yield from zip(chunk, np.asarray(self.generator.predict_on_batch(batch)), strict=True)

    @staticmethod
    def _failed(report: TranslationReport, path: Path, exc: StainvirtError) -> None:
        log.error("%s", exc)
        report.failures.append((path, str(exc)))


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
