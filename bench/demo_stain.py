"""Is the demo's virtual IHC a stain or a tint? Prints figures; not a test.

`make demo` trains the `counterstain` preset on the bundled sample (skin H&E, colon
IHC) and translates the two held-out H&E regions into out/demo/A2B/. There is
no true IHC of those regions, so this reads what a pathologist would look at:
where the brown goes. A stain browns some tissue and leaves the rest; a tint
browns everything alike. Each region is split as bench/learns_context.py splits
its slide: the cell-dense compartment (hematoxylin density smoothed with a
Gaussian of sigma 16 px, above the 60th percentile of the region's tissue: the
epidermis and the dense cell clusters) and the loose tissue around it (the
dermis). Printed: the share of tissue pixels whose DAB density is above
stainvirt's positivity threshold, in all the tissue, inside the compartment and
outside it; and, for comparison, the same share in the sample's IHC tiles,
which is what an unpaired model learns to reproduce (README, Prepare).

    make demo && python bench/demo_stain.py
    python bench/demo_stain.py --translated out/other/A2B
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from learns_context import compartment, positive_area  # noqa: E402

from stainvirt.evaluate.metrics import dab_positive_mask  # noqa: E402
from stainvirt.io.images import list_images, read_image  # noqa: E402
from stainvirt.tissue import tissue_mask  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def positive_shares(he: np.ndarray, ihc: np.ndarray) -> tuple[float, float, float]:
    """DAB-positive share of the tissue in ``ihc``: all, inside and outside ``he``'s compartment."""
    tissue, positive = tissue_mask(he), dab_positive_mask(ihc)
    dense = compartment(he) > 0.5
    return tuple(float(positive[tissue & part].mean()) for part in (True, dense, ~dense))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--translated", type=Path, default=Path("out/demo/A2B"),
                        help="folder of the demo's virtual IHC (default out/demo/A2B)")
    args = parser.parse_args()
    print(f"{'':32}{'DAB+ of tissue':>16}{'dense part':>12}{'loose part':>12}")
    rows = []
    for source in list_images(SAMPLE / "testA"):
        output = args.translated / f"{source.stem}_A2B.png"
        if not output.is_file():
            sys.exit(f"error: {output} is missing; run `make demo` first or give --translated")
        rows.append(positive_shares(read_image(source), read_image(output)))
        print_row(source.name, rows[-1])
    print_row("mean of the regions", np.mean(rows, axis=0))
    # The IHC's pale stroma fails the tissue test (bright, nearly grey): count every pixel.
    for split in ("trainB", "testB"):
        share = positive_area([read_image(f) for f in list_images(SAMPLE / split)])
        print(f"the sample's {split} IHC tiles: {share:.1%} of all pixels DAB-positive")


def print_row(name: str, shares) -> None:
    print(f"{name:32}{shares[0]:>16.1%}{shares[1]:>12.1%}{shares[2]:>12.1%}")


if __name__ == "__main__":
    main()
