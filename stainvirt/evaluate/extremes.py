"""The worst and best images of an evaluation, kept as small thumbnails while it streams."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FIGURE_PANEL_PX = 256
"""Longest side of each image panel in the figure: keeps the PNG well under 1 MB."""


@dataclass(frozen=True)
class FigureRow:
    """One row of the worst/best figure.

    Attributes:
        label: ``"worst 1"``, ``"best 2"``, ...
        name: Source image name (relative to the source folder).
        score: The model's primary metric on this image.
        panels: Thumbnails, uint8 RGB: source, translation, and target (paired)
            or reconstruction (unpaired).
    """

    label: str
    name: str
    score: float
    panels: tuple[np.ndarray, ...]


class Extremes:
    """The ``k`` lowest and ``k`` highest scores seen so far, with thumbnails of their images."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.seen = 0
        # Heaps of (key, index, thumbnails); the worst heap keys on -score so
        # that its root is the least bad image kept, the first to drop out.
        self._worst: list[tuple[float, int, tuple[np.ndarray, ...]]] = []
        self._best: list[tuple[float, int, tuple[np.ndarray, ...]]] = []

    def offer(self, score: float, index: int, panels: Sequence[np.ndarray]) -> None:
        """Keep image ``index`` if it is among the worst or best so far."""
        if self.k < 1 or np.isnan(score):
            return
        self.seen += 1
        thumbs = None
        for heap, key in ((self._worst, -score), (self._best, score)):
            if len(heap) < self.k or key > heap[0][0]:
                thumbs = thumbs or tuple(_thumbnail(p) for p in panels)
                push = heapq.heappush if len(heap) < self.k else heapq.heappushpop
                push(heap, (key, index, thumbs))

    def rows(self, names: Sequence[str]) -> list[FigureRow]:
        """The worst images (worst first), then the best ones not already shown (best first).

        With fewer than ``2 k`` images the lower half counts as the worst.
        """
        worst = sorted(self._worst, key=lambda item: (-item[0], item[1]))[: (self.seen + 1) // 2]
        shown = {index for _, index, _ in worst}
        best = sorted(
            (item for item in self._best if item[1] not in shown),
            key=lambda item: (-item[0], item[1]),
        )
        return [
            FigureRow(f"{kind} {rank}", names[index], sign * key, thumbs)
            for kind, sign, items in (("worst", -1.0, worst), ("best", 1.0, best))
            for rank, (key, index, thumbs) in enumerate(items, start=1)
        ]


def _thumbnail(image: np.ndarray) -> np.ndarray:
    """``image`` shrunk to at most ``FIGURE_PANEL_PX`` on its longest side."""
    from PIL import Image

    if max(image.shape[:2]) <= FIGURE_PANEL_PX:
        return image.copy()
    thumb = Image.fromarray(image)
    thumb.thumbnail((FIGURE_PANEL_PX, FIGURE_PANEL_PX), Image.Resampling.LANCZOS)
    return np.asarray(thumb)
