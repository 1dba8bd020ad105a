"""Install stainvirt: ``pip install -e .`` (CPU) or see README for the GPU line."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "stainvirt" / "__init__.py").read_text()
).group(1)

# On Linux and Windows x86-64 the CPU-only TensorFlow wheel spares CPU machines
# the GPU build; a GPU user swaps it for ``tensorflow[and-cuda]`` (README, "GPU").
TENSORFLOW = [
    "tensorflow-cpu>=2.16,<3; (platform_machine == 'x86_64' or platform_machine == 'AMD64')"
    " and sys_platform != 'darwin'",
    "tensorflow>=2.16,<3; platform_machine != 'x86_64' and platform_machine != 'AMD64'"
    " or sys_platform == 'darwin'",
]

setup(
    name="stainvirt",
    version=VERSION,
    description="Unpaired virtual staining (H&E <-> IHC) with CycleGAN on TensorFlow + Keras 3",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["stainvirt", "stainvirt.*"]),
    install_requires=[
        *TENSORFLOW,
        "keras>=3.3",
        "numpy>=1.24",
        "pillow>=10",
        "matplotlib>=3.7",
        "h5py>=3.9",
        "tifffile>=2024.2.12",
        "imagecodecs>=2024.1.1",
        "scikit-image>=0.22",
        "tqdm>=4.66",
        # Whole-slide formats; openslide-bin ships the OpenSlide library, no system package.
        "openslide-python>=1.4",
        "openslide-bin>=4.0",
    ],
    extras_require={
        "test": ["pytest>=8", "ruff>=0.6", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29"],
        "notebooks": ["jupyterlab>=4", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29"],
    },
    entry_points={"console_scripts": ["stainvirt=stainvirt.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Intended Audience :: Science/Research",
        "Topic :: Scientific/Engineering :: Image Processing",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
