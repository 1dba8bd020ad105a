"""One frozen configuration for a CycleGAN run and its presets (saved by ``RunDir``).

Code names map to the paper (Zhu et al. 2017) as follows: ``G_AB`` is G
(A -> B, H&E -> IHC), ``G_BA`` is F (B -> A), ``D_A`` judges domain A and
``D_B`` judges domain B.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from stainvirt.errors import StainvirtError


def _field(
    default: Any, help: str, cli: bool = True, choices: tuple[str, ...] | None = None
) -> Any:
    """A config field with its ``--help`` text; ``cli=False`` for fields set from the data.

    ``choices`` lists the values a text field takes (checked, and offered by ``--help``).
    """
    return dataclasses.field(
        default=default, metadata={"help": help, "cli": cli, "choices": choices}
    )


@dataclass(frozen=True)
class Config:
    """Everything needed to rebuild, train and reload a CycleGAN.

    Defaults are the reference recipe ("paper" preset).
    """

    # Networks
    channels_a: int = _field(
        3, "channels of domain A images (set from the data set: 3 for RGB)", cli=False
    )
    channels_b: int = _field(
        3, "channels of domain B images (set from the data set: 3 for RGB)", cli=False
    )
    image_size: int = _field(256, "side of the square crops the networks train on")
    generator: str = _field(
        "resnet", "the reference's ResNet or its U-Net", choices=("resnet", "unet")
    )
    ngf: int = _field(64, "filters in the generators' first layer")
    n_blocks: int = _field(9, "residual blocks of the ResNet generator (9 at 256 px, 6 at 128)")
    unet_depth: int = _field(8, "down-sampling steps of the U-Net (8 for 256 px, 7 for 128)")
    upsample: str = _field(
        "transpose", "transposed conv (reference) or resize (upsample + conv: no checkerboard)",
        choices=("transpose", "resize"),
    )
    dropout: bool = _field(False, "dropout 0.5 in the U-Net's inner levels (reference: off)")
    residual_output: bool = _field(
        False, "generators predict a change to their input, so they start as the identity "
               "(between domains of the same channel count; otherwise they predict the output)"
    )
    residual_start: str = _field(
        "input", "what a residual generator starts from and edits: its input (the identity), "
                 "or the input's hematoxylin alone (RGB to RGB: an H&E starts as an IHC with no "
                 "marker, blue nuclei on pale stroma, and the generator learns where to add the "
                 "marker; an IHC starts without its DAB)",
        choices=("input", "hematoxylin"),
    )
    ndf: int = _field(64, "filters in the discriminators' first layer")
    n_layers_d: int = _field(3, "strided layers of the PatchGAN (3: 70x70 receptive field)")
    norm_d: str = _field(
        "instance", "normalisation in the PatchGAN: instance (reference) or none (on small "
                    "crops instance norm averages over only the few positions its strides leave)",
        choices=("instance", "none"),
    )

    # Losses
    lambda_adversarial: float = _field(
        1.0, "weight of each generator's LSGAN loss (0 with --lambda-cycle 0 and "
             "--lambda-paired: a supervised-only ablation, which trains no discriminator)"
    )
    lambda_cycle: float = _field(10.0, "weight of each cycle-consistency L1 loss")
    lambda_identity: float = _field(0.5, "identity L1 weight, as a fraction of lambda_cycle")
    pool_size: int = _field(50, "past fakes kept for the discriminators (0: no pool)")
    lambda_paired: float = _field(
        0.0, "weight of the supervised loss on registered pairs (prepare --paired): L1 "
             "over a Gaussian pyramid, per direction (0: unpaired CycleGAN only)"
    )
    paired_levels: int = _field(
        4, "levels of that pyramid: each halves the resolution, so a pair a few pixels "
           "out of register still agrees on the coarser levels"
    )

    lambda_structure: float = _field(
        0.0, "weight of each generator's structure-consistency loss: 1 minus the local "
             "agreement (SSIM's contrast-structure term, squared) of its input's and output's "
             "grey levels, so brightness, colour and polarity may change but tissue stays "
             "where it is and does not fade (0: off)"
    )
    structure_channel: str = _field(
        "grey", "what the structure loss compares: grey levels (any domains), or the "
                "hematoxylin optical density (RGB stains that share a hematoxylin counterstain, "
                "as H&E and most IHC: the nuclei stay, the eosin may go)",
        choices=("grey", "hematoxylin"),
    )

    # Optimisation
    lr: float = _field(2e-4, "Adam learning rate of the generators")
    lr_d: float = _field(2e-4, "Adam learning rate of the discriminators")
    beta_1: float = _field(0.5, "Adam beta_1")
    beta_2: float = _field(0.999, "Adam beta_2")
    epochs: int = _field(100, "epochs at the constant learning rate")
    epochs_decay: int = _field(100, "further epochs of linear learning-rate decay to zero")
    steps_per_epoch: int = _field(0, "steps per epoch (0: one pass over the larger domain)")
    batch_size: int = _field(1, "global batch size (split across replicas)")
    load_size: int = _field(286, "resize tiles to this side before the random crop (0: don't)")
    seed: int = _field(0, "seeds data order, augmentation, weight init and the image pool")

    # Execution
    jit_compile: str = _field(
        "auto", "compile the train step with XLA: auto turns it on where it is faster "
                "(GPUs, and CPUs without oneDNN) and falls back without it, with a warning, "
                "if it does not compile", choices=("auto", "on", "off"),
    )
    mixed_precision: bool = _field(False, "float16 compute with loss scaling (for GPUs)")
    strategy: str = _field(
        "auto", "tf.distribute strategy: auto (mirrored over 2+ GPUs, else one device), "
                "default (one device), mirrored or multiworker (TF_CONFIG)",
        choices=("auto", "default", "mirrored", "multiworker"),
    )

    def __post_init__(self) -> None:
        if isinstance(self.jit_compile, bool):
            # Configs saved before 0.4 stored a bool.
            object.__setattr__(self, "jit_compile", "on" if self.jit_compile else "off")
        _validate(self)

    @property
    def total_epochs(self) -> int:
        """Constant plus decay epochs."""
        return self.epochs + self.epochs_decay

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (unknown names are a clear error)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise StainvirtError(
                f"unknown config field(s): {', '.join(unknown)}; "
                f"known fields: {', '.join(f.name for f in fields(self))}"
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Build from a dict, rejecting unknown fields with a clear error."""
        return cls().replace(**values)


PRESETS: dict[str, dict[str, Any]] = {
    # The reference implementation's settings, for a GPU.
    "paper": {},
    # A few seconds per epoch: for tests and smoke runs.
    "tiny": dict(
        image_size=32, ngf=8, ndf=8, n_blocks=2, unet_depth=5, pool_size=4,
        epochs=1, epochs_decay=1, steps_per_epoch=3, batch_size=2, load_size=0,
    ),
    # Fits 2 CPU cores and learns a stain mapping in minutes (bench/learns.py: from
    # the identity's 17.0 dB to 21-25 dB in 15 minutes). A generator that starts
    # as the identity; no identity loss, whose L1 pull would hold it there; 32 px
    # crops in pairs and 3 residual blocks for several steps a second, since a
    # stain is mostly colour, not context; faster learning rates; 3,000 steps
    # (4-13 minutes on 2 cores), so the learning rate has decayed by then. Cycle
    # weight 2, not 10: an IHC has lost the H&E's eosin, and a strong cycle loss
    # makes the generator hide it in the output as a tint, to get it back
    # (0.3's bench/learns_context.py: 17.7 dB against 14.1 with 10; learns.py unchanged).
    # It does not learn a stain that depends on context: bench/README.md says what does.
    "cpu": dict(
        image_size=32, ngf=16, ndf=32, n_blocks=3, unet_depth=5, residual_output=True,
        upsample="resize", lambda_identity=0.0, lambda_cycle=2.0, pool_size=50, lr=1e-3,
        lr_d=5e-4,
        epochs=15, epochs_decay=15, steps_per_epoch=100, batch_size=2, load_size=0,
    ),
}
# Unpaired, for a marker that depends on the tissue around a cell: the cpu recipe
# with the U-Net on 96 px crops (its 3 x 3 bottom sees the whole crop), a PatchGAN
# without instance norm, and half the learning rates (at cpu's it collapsed on
# bench/learns.py; at 0.7 of them seed 0 of bench/learns_context.py still missed
# "no marker"; a cycle weight of 1 missed learns.py's 24 dB; bench/README.md).
# learns.py 25.1 dB (cpu: 22.3); bench/learns_context.py, seeds 0 and 1: the marker
# in place (DAB Dice 0.76 and 0.81), 1.2 and 3.0 dB above "no marker". On the
# bundled sample the epidermis turns brown and the dermis cream to golden with the
# run (bench/demo_stain.py), where cpu leaves a pink tint.
PRESETS["context"] = {
    **PRESETS["cpu"], "generator": "unet", "image_size": 96, "batch_size": 1,
    "norm_d": "none", "lr": 5e-4, "lr_d": 2.5e-4,
}
# A marker on a hematoxylin counterstain that leaves most tissue unstained, as most IHC:
# context, with generators that start from their input's hematoxylin alone. An H&E
# starts as an IHC with no marker (blue nuclei, pale stroma) and the GAN learns where
# to add DAB; from the identity the cheapest way to look like an IHC was to turn the
# eosin into a light DAB, a tint over the sample's dermis. From that start the identity
# loss asks G_AB to put B's marker back on B's own tissue (G_AB(b) starts as b without
# its DAB), every step: the one term that shows where the marker goes. At the paper's
# 0.5 the marker on the sample swung with the seed from clean brown to none; at 2.0 it
# came through on every run measured, the dermis still clean (bench/demo_stain.py), so
# the demo trains it. bench/learns_context.py, seeds 0 and 1: 20.9 and 22.9 dB, DAB r
# 0.87 and 0.88 (context: 18.9 and 20.7, 0.79 and 0.84). Not for a mapping that browns
# the stroma too (bench/learns.py; context there).
PRESETS["counterstain"] = {
    **PRESETS["context"], "residual_start": "hematoxylin", "lambda_identity": 2.0,
}
# Registered pairs (adjacent sections): the cpu recipe plus the supervised pyramid loss,
# which tells the generators where the stain goes; the adversarial and cycle losses
# keep the result sharp where the pairs are out of register.
PRESETS["paired"] = {**PRESETS["cpu"], "lambda_paired": 10.0}
# A marker that depends on the tissue around a cell (cytokeratin in the epithelium,
# not in the stroma) is not a colour: the crops must hold the compartment and the
# generator see it. 96 px crops and the U-Net, whose five halvings (cpu's unet_depth)
# see the whole crop at little cost; 3,000 steps, about 7 minutes on 2 cores. From
# pairs it learns such a marker (bench/learns_context.py: 26.2 dB / DAB r 0.88; a
# six-block ResNet on the same crops reached 22.0 dB).
PRESETS["paired-context"] = {
    **PRESETS["paired"], "image_size": 96, "batch_size": 1, "generator": "unet",
}


def preset(name: str, **overrides: Any) -> Config:
    """The named preset (see :data:`PRESETS`) with optional overrides."""
    if name not in PRESETS:
        raise StainvirtError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return Config().replace(**{**PRESETS[name], **overrides})


def _validate(cfg: Config) -> None:
    def fail(msg: str) -> None:
        raise StainvirtError(f"invalid config: {msg}")

    for f in fields(cfg):
        choices = f.metadata["choices"]
        if choices and getattr(cfg, f.name) not in choices:
            fail(f"{f.name} must be {', '.join(choices[:-1])} or {choices[-1]}, "
                 f"not {getattr(cfg, f.name)!r}")
    for name in ("channels_a", "channels_b", "image_size", "ngf", "ndf", "batch_size",
                 "n_layers_d", "unet_depth", "paired_levels"):
        if getattr(cfg, name) < 1:
            fail(f"{name} must be at least 1")
    for name in ("n_blocks", "pool_size", "epochs", "epochs_decay", "steps_per_epoch", "load_size",
                 "lambda_paired", "lambda_adversarial", "lambda_cycle", "lambda_identity",
                 "lambda_structure"):
        if getattr(cfg, name) < 0:
            fail(f"{name} must not be negative")
    if cfg.total_epochs < 1:
        fail("epochs + epochs_decay must be at least 1")
    if cfg.load_size and cfg.load_size < cfg.image_size:
        fail(f"load_size ({cfg.load_size}) must be 0 or at least image_size ({cfg.image_size})")
    # The structure loss compares 11x11 windows (stainvirt.training.structure.WINDOW).
    if cfg.lambda_structure > 0 and cfg.image_size < 11:
        fail(f"lambda_structure needs crops of at least 11 px, not {cfg.image_size}")
    if cfg.structure_channel == "hematoxylin" and (cfg.channels_a, cfg.channels_b) != (3, 3):
        fail("structure_channel hematoxylin compares stains of RGB images; these domains have "
             f"{cfg.channels_a} and {cfg.channels_b} channels (use grey)")
    min_size = min_image_size(cfg)
    if cfg.image_size < min_size or cfg.image_size % size_multiple(cfg):
        fail(
            f"image_size {cfg.image_size} does not fit the {cfg.generator} generator: use a "
            f"multiple of {size_multiple(cfg)} of at least {min_size}"
        )
    # Each pyramid level halves the crop; the blur below a level needs 3 pixels.
    levels = 1 + max(0, (cfg.image_size // 3).bit_length())
    if cfg.lambda_paired > 0 and cfg.paired_levels > levels:
        fail(f"paired_levels {cfg.paired_levels} is too many for {cfg.image_size} px crops; "
             f"use at most {levels}")


def size_multiple(cfg: Config) -> int:
    """Image sides must be a multiple of this for the generator to keep their size."""
    return 2**cfg.unet_depth if cfg.generator == "unet" else 4


def min_image_size(cfg: Config) -> int:
    """Smallest square side both the generator and the PatchGAN accept."""
    # The PatchGAN needs at least a few pixels left after its strided layers.
    patch_min = 2 ** (cfg.n_layers_d + 2)
    return max(patch_min, size_multiple(cfg))
