"""stainvirt: unpaired virtual staining (H&E <-> IHC) with CycleGAN on Keras 3.

Domain A is H&E, domain B is IHC. The pipeline is ``prepare`` (pack tiles into a
``.npz``) -> ``train`` -> ``translate`` -> ``evaluate``; each step is a module
of this package and a ``stainvirt`` subcommand.
"""

__version__ = "0.4.9"
