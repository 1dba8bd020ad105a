"""Label-free domains in ``stainvirt prepare``: each domain's kind, range and slices.

A domain is packed either as 8-bit RGB (``rgb``: brightfield stains, every file
converted as :mod:`stainvirt.io.images` does) or as it is stored (``native``:
quantitative phase, autofluorescence, X-ray CT: each file's channels and pixel
type kept, read with :func:`~stainvirt.io.native.read_native`). ``auto`` looks
at the headers of the domain's files (train and test) and picks ``native`` when
they are grey, 16-bit, float, stacks or of more than 4 channels; whole slides
count as 8-bit colour without being opened. A domain that mixes such files with
8-bit colour ones stays ``rgb``, as before label-free domains existed.

Everything here happens before any tile is written, so every shard records the
same domains: the files of a native domain are checked to share one channel
count and pixel type, its intensity range is fitted on a bounded sample of its
training pixels (:func:`~stainvirt.domain.fit_domain`), and each stack is split
into one job per slice.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stainvirt.domain import RGB, Domain, fit_domain
from stainvirt.errors import StainvirtError
from stainvirt.io.native import PixelKind, pixel_kind, read_native
from stainvirt.io.slide import NATIVE, Resolution, Slide
from stainvirt.io.slide_formats import ArraySlide
from stainvirt.io.slides import is_vendor_slide, open_slide

log = logging.getLogger("stainvirt")

KINDS = ("auto", "rgb", "native")
"""How a domain's files are read: decided from their headers, as 8-bit RGB, or as stored."""
SAMPLE_VALUES = 2_000_000
"""Pixel values (all files together) a native domain's intensity range is fitted on."""
_SKIP_BAD = "remove or replace the file, or pass --skip-bad to skip such files"
_SLICES_KEPT = 2
"""Stacks held in memory at once: both images of a registered pair of stacks."""


class SourceImage(NamedTuple):
    """One input file (or one slice of a stack) and the split its tiles go to."""

    split: str
    root: Path
    file: Path
    z: int | None = None
    """The slice of a stack; None for a 2D image."""

    @property
    def domain(self) -> str:
        """``A`` or ``B``."""
        return self.split[-1]

    @property
    def source(self) -> str:
        """The file relative to its input folder, ``#zNNNN`` appended for a stack's slice."""
        name = self.file.relative_to(self.root).as_posix()
        return name if self.z is None else f"{name}#z{self.z:04d}"


Job = tuple[SourceImage, ...]
"""What is tiled at once: one image or slice, or a registered pair (A image, B image)."""

_Found = PixelKind | StainvirtError | None
"""A file's header: its kind, why it cannot be read, or None for a whole slide."""


@dataclass
class DomainPlan:
    """How each domain is packed, fixed before any tile is written.

    Attributes:
        domains: Per ``A``/``B``, the :class:`~stainvirt.domain.Domain` tiles are stored as.
        kinds: Per ``A``/``B``, ``rgb`` or ``native``.
        jobs: What to tile, a stack's slices as jobs of their own.
        bad: Files skipped (``skip_bad``) because they cannot join their domain.
    """

    domains: dict[str, Domain]
    kinds: dict[str, str]
    jobs: list[Job]
    bad: list[str] = field(default_factory=list)
    _stacks: dict[Path, np.ndarray | str] = field(default_factory=dict, repr=False)

    def is_native(self, image: SourceImage) -> bool:
        """Whether ``image``'s domain is packed as stored (no tissue test, no resampling)."""
        return self.kinds[image.domain] == "native"

    def open(self, image: SourceImage) -> Slide:
        """``image`` (one slice, for a stack) as a :class:`~stainvirt.io.slide.Slide` to tile.

        Raises:
            StainvirtError: if the file cannot be read, or does not match its domain.
        """
        if not self.is_native(image):
            return open_slide(image.file)
        return ArraySlide(image.file, self._stack(image)[image.z or 0])

    def _stack(self, image: SourceImage) -> np.ndarray:
        # A stack's slices are consecutive jobs: keep it (or why it failed) until they are done.
        if image.file not in self._stacks:
            while len(self._stacks) >= _SLICES_KEPT:
                self._stacks.pop(next(iter(self._stacks)))
            try:
                self._stacks[image.file] = _read(image.file, self.domains[image.domain],
                                                 image.domain)
            except StainvirtError as exc:
                self._stacks[image.file] = str(exc)
        stack = self._stacks[image.file]
        if isinstance(stack, str):
            raise StainvirtError(stack)
        return stack


def plan_domains(
    jobs: Sequence[Job],
    kinds: dict[str, str],
    ranges: dict[str, str],
    *,
    resolution: Resolution = NATIVE,
    seed: int = 0,
    skip_bad: bool = False,
) -> DomainPlan:
    """Decide each domain's kind and range, check its files, and split stacks into slices.

    Args:
        jobs: Every image to pack (registered pairs as two-image jobs).
        kinds: Per ``A``/``B``: ``auto``, ``rgb`` or ``native`` (:data:`KINDS`).
        ranges: Per ``A``/``B``: ``auto``, ``full``, ``percentile`` or ``LOW,HIGH``
            (:func:`~stainvirt.domain.fit_domain`); only ``auto``/``full`` for RGB.
        resolution: The resolution asked for; native domains allow only their own.
        seed: Seeds the sample of training pixels a percentile range is fitted on.
        skip_bad: Leave out (and list) files that cannot join their native domain.

    Raises:
        StainvirtError: for an unknown kind or malformed range, a range or a
            resolution a domain's kind does not allow, and (unless ``skip_bad``) a
            native domain's file that is unreadable, a whole slide, of another
            channel count or pixel type than the others, or paired with an image
            of another slice count.
    """
    for d in "AB":
        if kinds[d] not in KINDS:
            raise StainvirtError(f"--kind-{d.lower()} {kinds[d]!r} is not one of "
                                 f"{', '.join(KINDS)}")
        if ranges[d].strip().lower() not in ("auto", "percentile"):
            try:
                fit_domain(1, "float32", None, ranges[d])
            except StainvirtError as exc:
                raise StainvirtError(f"--range-{d.lower()}: {exc}") from None
    files = {d: list(dict.fromkeys(i.file for job in jobs for i in job if i.domain == d))
             for d in "AB"}
    found = {d: {} if kinds[d] == "rgb" else {f: _peek(f) for f in files[d]} for d in "AB"}
    chosen = {d: _auto(d, found[d]) if kinds[d] == "auto" else kinds[d] for d in "AB"}
    plan = DomainPlan(dict.fromkeys("AB", RGB), chosen, list(jobs))
    agreed: dict[str, tuple[int, str, dict[Path, str]]] = {}
    for d in "AB":
        flag = f"--kind-{d.lower()}"
        if chosen[d] == "rgb":
            if ranges[d].strip().lower() not in ("auto", "full"):
                raise StainvirtError(
                    f"--range-{d.lower()} {ranges[d]}: domain {d} is packed as 8-bit RGB, "
                    f"whose range is 0-255; leave out --range-{d.lower()}, or pass {flag} native"
                )
            continue
        if resolution.mpp is not None or resolution.magnification is not None:
            raise StainvirtError(
                f"--mpp/--magnification: domain {d} is packed as stored (label-free images), "
                f"and resampling those is not supported; leave out --mpp/--magnification, or "
                f"pass {flag} rgb"
            )
        agreed[d] = _agree(d, found[d], skip_bad)
        plan.jobs, plan.bad = _drop(plan.jobs, agreed[d][2], plan.bad)
    slices = {f: k.slices for d in "AB" if chosen[d] == "native"
              for f, k in found[d].items() if isinstance(k, PixelKind)}
    expanded: list[Job] = []
    for job in plan.jobs:
        try:
            expanded += _slices(job, slices)
        except StainvirtError as exc:
            if not skip_bad:
                raise
            log.warning("skipped: %s", exc)
            plan.bad += [str(image.file) for image in job]
    plan.jobs = expanded
    # Every file is checked before the slow pass over the pixels.
    for d, (channels, dtype, _) in agreed.items():
        training = list(dict.fromkeys(i.file for job in plan.jobs for i in job
                                      if i.split == f"train{d}"))
        plan.domains[d] = _fit(d, channels, dtype, ranges[d], training, seed, skip_bad)
    return plan


def domain_note(settings: dict) -> str:
    """``; domain A: 1-channel uint16, range [...]`` per native domain, for the summary line."""
    kinds, domains = settings.get("kinds") or {}, settings.get("domains") or {}
    return "".join(f"; domain {d}: {Domain.from_dict(domains.get(d)).describe()}"
                   for d in "AB" if kinds.get(d) == "native")


def _peek(path: Path) -> _Found:
    """What a file holds, from its header; whole slides are 8-bit colour without a look."""
    if is_vendor_slide(path):
        return None
    try:
        return pixel_kind(path)
    except StainvirtError as exc:
        return exc


def _auto(domain: str, found: dict[Path, _Found]) -> str:
    """``native`` when the domain's readable files are all other than 8-bit colour."""
    other = {f: k for f, k in found.items() if isinstance(k, PixelKind) and not k.rgb_like}
    if not other:
        return "rgb"
    colour = sum(k is None or (isinstance(k, PixelKind) and k.rgb_like) for k in found.values())
    example, kind = next(iter(other.items()))
    flag = f"--kind-{domain.lower()}"
    if colour:
        # A few grey or 16-bit files among colour ones are converted, as before.
        log.info("domain %s: %d of its images are not 8-bit colour (e.g. %s: %s), %d are: "
                 "packing all as 8-bit RGB; pass %s native to keep their channels and pixel "
                 "type (every image must then share them)", domain, len(other), example,
                 _text(kind), colour, flag)
        return "rgb"
    log.info("domain %s: its images are not 8-bit colour (e.g. %s: %s), so they are packed "
             "as stored (label-free), keeping their channels and pixel type; pass %s rgb to "
             "convert them to 8-bit RGB instead", domain, example, _text(kind), flag)
    return "native"


def _agree(
    domain: str, found: dict[Path, _Found], skip_bad: bool
) -> tuple[int, str, dict[Path, str]]:
    """The channel count and pixel type a native domain's files share, and the files refused.

    Raises:
        StainvirtError: for the first file refused (unless ``skip_bad``), or when none is readable.
    """
    flag = f"--kind-{domain.lower()}"
    readable = [(k.channels, k.dtype) for k in found.values() if isinstance(k, PixelKind)]
    refused: dict[Path, str] = {}
    (channels, dtype), n = Counter(readable or [(0, "")]).most_common(1)[0]
    for file, kind in found.items():
        if kind is None:
            why = (f"{file}: a whole slide cannot be packed as stored (label-free domain "
                   f"{domain}); pass {flag} rgb, or move the slide out of the folder")
        elif isinstance(kind, StainvirtError):
            why = _advised(str(kind))
        elif (kind.channels, kind.dtype) != (channels, dtype):
            why = (f"{file}: {_text(kind, slices=False)} image, but the other images of domain "
                   f"{domain} are {channels}-channel {dtype} ({n} files); the images of a "
                   f"label-free domain must share channel count and pixel type: convert or "
                   f"remove it, pass --skip-bad to skip it, or {flag} rgb to convert every "
                   "image to 8-bit RGB")
        else:
            continue
        if not skip_bad or not readable:
            raise StainvirtError(why)
        log.warning("skipped: %s", why)
        refused[file] = why
    return channels, dtype, refused


def _drop(jobs: list[Job], refused: dict[Path, str], bad: list[str]) -> tuple[list[Job], list[str]]:
    """``jobs`` without those that hold a refused file; their files added to ``bad``."""
    kept = [job for job in jobs if not any(image.file in refused for image in job)]
    bad = bad + [str(image.file) for job in jobs if any(i.file in refused for i in job)
                 for image in job]
    return kept, bad


def _fit(
    domain: str, channels: int, dtype: str, spec: str, training: list[Path], seed: int,
    skip_bad: bool,
) -> Domain:
    """The native domain, its range fitted on at most :data:`SAMPLE_VALUES` training pixels."""
    wanted = spec.strip().lower()
    needs_sample = wanted == "percentile" or (wanted == "auto" and dtype != "uint8")
    samples = _sample(training, seed, skip_bad) if needs_sample else None
    try:
        return fit_domain(channels, dtype, samples, spec)
    except StainvirtError as exc:
        raise StainvirtError(
            f"domain {domain}: {exc} in its {len(training)} training images; check them, or "
            f"give the range as --range-{domain.lower()} LOW,HIGH"
        ) from None


def _sample(files: list[Path], seed: int, skip_bad: bool) -> np.ndarray:
    """A seeded sample of the files' pixel values, an equal share of :data:`SAMPLE_VALUES` each."""
    share = max(1, SAMPLE_VALUES // max(1, len(files)))
    rng = np.random.default_rng(seed)
    parts = []
    for file in files:
        try:
            flat = read_native(file).reshape(-1)
        except StainvirtError as exc:
            if not skip_bad:
                raise StainvirtError(_advised(str(exc))) from None
            continue  # listed as bad when its tiles are cut
        parts.append(flat if flat.size <= share else flat[rng.integers(0, flat.size, share)])
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _slices(job: Job, slices: dict[Path, int]) -> list[Job]:
    """One job per slice of the job's stack(s); a pair's two stacks go slice by slice.

    Raises:
        StainvirtError: for a pair of images with different numbers of slices.
    """
    counts = [slices.get(image.file, 1) for image in job]
    if max(counts) == 1:
        return [job]
    if len(set(counts)) > 1:
        sizes = " and ".join(f"{image.file} has {n} slice{'s' * (n > 1)}"
                             for image, n in zip(job, counts, strict=True))
        raise StainvirtError(f"{sizes}: registered pairs need the same number of slices; "
                             "pair the stack with a stack of as many, or leave out --paired")
    return [tuple(image._replace(z=z) for image in job) for z in range(counts[0])]


def _read(file: Path, domain: Domain, name: str) -> np.ndarray:
    """A native domain's file as ``(Z, H, W, C)``, checked against the domain."""
    try:
        stack = read_native(file)
    except StainvirtError as exc:
        raise StainvirtError(_advised(str(exc))) from None
    if stack.shape[-1] != domain.channels or stack.dtype != domain.dtype:
        raise StainvirtError(
            f"{file}: reads as {stack.shape[-1]}-channel {stack.dtype}, but domain {name} is "
            f"{domain.channels}-channel {domain.dtype}; convert the file, or {_SKIP_BAD}"
        )
    return stack


def _text(kind: PixelKind, slices: bool = True) -> str:
    stack = f", a stack of {kind.slices} slices" if slices and kind.slices > 1 else ""
    return f"{kind.channels}-channel {kind.dtype}{stack}"


def _advised(message: str) -> str:
    """A reading error with what to do about it, once."""
    return message if "--skip-bad" in message else f"{message}; {_SKIP_BAD}"
