"""The reference CycleGAN networks and training step in PyTorch, for ``bench/train_speed.py`` only.

A faithful copy of what junyanz/pytorch-CycleGAN-and-pix2pix trains by default
(``models/networks.py``, ``models/cycle_gan_model.py``, ``util/image_pool.py``):
``ResnetGenerator`` (reflection padding, ``InstanceNorm2d(affine=False)``, convs
with bias, transposed-conv upsampling), the 70x70 ``NLayerDiscriminator``,
N(0, 0.02) init, LSGAN + cycle + identity losses, the 50-image pool and
``optimize_parameters`` (generators' Adam step, then the discriminators').

Two options of ours that the reference lacks are added, so presets that use them
(``cpu``) compare like with like: ``upsample="resize"`` (nearest-neighbour x2,
reflect-pad 1, 3x3 conv, instead of each transposed conv) and
``residual_output`` (head ``tanh(atanh(0.999 * clip(image, -1, 1)) + delta)``,
the last 7x7 conv starting at zero). With neither, the networks are the
reference's exactly.

PyTorch is not a dependency of stainvirt: importing this module fails when it is
not installed, and the bench reports "torch not installed".
"""

from __future__ import annotations

import itertools
import random
import sys
from typing import TYPE_CHECKING

# Torch's PyPI wheels bring triton, a GPU kernel compiler this CPU reference never
# uses; torch imports it lazily (Adam's constructor, through torch._dynamo), and
# importing it after TensorFlow kills the process (segfault in libtriton). Hidden,
# torch runs without it.
sys.modules.setdefault("triton", None)

import torch  # noqa: E402
from torch import nn  # noqa: E402

if TYPE_CHECKING:
    from stainvirt.config import Config


class ResnetBlock(nn.Module):
    """Reflect-pad, 3x3 conv, instance norm, ReLU, reflect-pad, 3x3 conv, instance norm; plus x."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            nn.InstanceNorm2d(dim, affine=False),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=True),
            nn.InstanceNorm2d(dim, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """The reference ``resnet_Nblocks`` generator (``norm='instance'``: every conv has a bias).

    ``upsample="resize"`` and ``residual_output`` are stainvirt's options (see the
    module docstring); their defaults build the reference's network.
    """

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 upsample: str = "transpose", residual_output: bool = False) -> None:
        super().__init__()
        model: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=True),
            nn.InstanceNorm2d(ngf, affine=False),
            nn.ReLU(True),
        ]
        n_downsampling = 2
        for i in range(n_downsampling):
            mult = 2**i
            model += [
                nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1,
                          bias=True),
                nn.InstanceNorm2d(ngf * mult * 2, affine=False),
                nn.ReLU(True),
            ]
        mult = 2**n_downsampling
        model += [ResnetBlock(ngf * mult) for _ in range(n_blocks)]
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            if upsample == "resize":
                model += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.ReflectionPad2d(1),
                    nn.Conv2d(ngf * mult, ngf * mult // 2, kernel_size=3, padding=0, bias=True),
                ]
            else:
                model += [
                    nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2,
                                       padding=1, output_padding=1, bias=True),
                ]
            model += [nn.InstanceNorm2d(ngf * mult // 2, affine=False), nn.ReLU(True)]
        model += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0),
        ]
        self.residual_output = residual_output and input_nc == output_nc
        if not self.residual_output:
            model.append(nn.Tanh())
        self.model = nn.Sequential(*model)

    @property
    def last_conv(self) -> nn.Conv2d:
        """The 7x7 conv that makes the output (``delta`` with ``residual_output``)."""
        return [m for m in self.model if isinstance(m, nn.Conv2d)][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual_output:
            # stainvirt's ResidualTanh(scale=0.999): starts as the identity while delta is 0.
            return torch.tanh(torch.atanh(0.999 * x.clamp(-1.0, 1.0)) + self.model(x))
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """The reference PatchGAN (``netD='basic'``: 70x70 receptive field with ``n_layers=3``)."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        kw, padw = 4, 1
        sequence: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        nf_mult = 1
        for n in range(1, n_layers):
            nf_mult_prev, nf_mult = nf_mult, min(2**n, 8)
            sequence += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2,
                          padding=padw, bias=True),
                nn.InstanceNorm2d(ndf * nf_mult, affine=False),
                nn.LeakyReLU(0.2, True),
            ]
        nf_mult_prev, nf_mult = nf_mult, min(2**n_layers, 8)
        sequence += [
            nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw,
                      bias=True),
            nn.InstanceNorm2d(ndf * nf_mult, affine=False),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*sequence)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """The reference ``init_type='normal'``: conv weights N(0, gain), biases 0."""

    def init_func(m: nn.Module) -> None:
        if hasattr(m, "weight") and "Conv" in type(m).__name__:
            nn.init.normal_(m.weight.data, 0.0, gain)
            if getattr(m, "bias", None) is not None:
                nn.init.constant_(m.bias.data, 0.0)

    return net.apply(init_func)


class ImagePool:
    """The reference ``util/image_pool.py``: a history of fakes for the discriminators."""

    def __init__(self, pool_size: int) -> None:
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool_size == 0:
            return images
        out = []
        for image in images:
            image = image.data.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image)
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.pool_size - 1)
                out.append(self.images[i].clone())
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out, 0)


def set_requires_grad(nets: list[nn.Module], requires_grad: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad = requires_grad


class CycleGANReference:
    """The reference ``CycleGANModel`` in training mode (``--gan_mode lsgan``, defaults).

    Args:
        ngf, n_blocks, ndf, n_layers_d: network sizes (reference: 64, 9, 64, 3).
        upsample, residual_output: stainvirt's generator options (reference: "transpose", False).
        lambda_cycle, lambda_identity, pool_size, lr, beta_1: as the reference's options.
        seed: seeds torch and the pool's ``random``.
    """

    def __init__(
        self,
        ngf: int = 64,
        n_blocks: int = 9,
        ndf: int = 64,
        n_layers_d: int = 3,
        upsample: str = "transpose",
        residual_output: bool = False,
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        pool_size: int = 50,
        lr: float = 2e-4,
        lr_d: float | None = None,
        beta_1: float = 0.5,
        seed: int = 0,
    ) -> None:
        torch.manual_seed(seed)
        random.seed(seed)
        self.netG_A = init_weights(ResnetGenerator(3, 3, ngf, n_blocks, upsample, residual_output))
        self.netG_B = init_weights(ResnetGenerator(3, 3, ngf, n_blocks, upsample, residual_output))
        for net in (self.netG_A, self.netG_B):
            if net.residual_output:
                # As ours: a residual generator's last conv starts at zero (kernel and bias).
                nn.init.zeros_(net.last_conv.weight.data)
        self.netD_A = init_weights(NLayerDiscriminator(3, ndf, n_layers_d))
        self.netD_B = init_weights(NLayerDiscriminator(3, ndf, n_layers_d))
        self.lambda_cycle, self.lambda_identity = lambda_cycle, lambda_identity
        self.fake_A_pool, self.fake_B_pool = ImagePool(pool_size), ImagePool(pool_size)
        self.criterionGAN = nn.MSELoss()
        self.criterionCycle = nn.L1Loss()
        self.criterionIdt = nn.L1Loss()
        self.optimizer_G = torch.optim.Adam(
            itertools.chain(self.netG_A.parameters(), self.netG_B.parameters()),
            lr=lr, betas=(beta_1, 0.999),
        )
        self.optimizer_D = torch.optim.Adam(
            itertools.chain(self.netD_A.parameters(), self.netD_B.parameters()),
            lr=lr if lr_d is None else lr_d, betas=(beta_1, 0.999),
        )
        for net in (self.netG_A, self.netG_B, self.netD_A, self.netD_B):
            net.train()

    @classmethod
    def from_config(cls, cfg: Config) -> CycleGANReference:
        """The reference model with the networks and loss weights of a stainvirt ``Config``.

        Follows ``upsample`` and ``residual_output``; the identity loss is skipped
        when ``lambda_identity`` is 0, as in ours. Only the ResNet generator, RGB
        domains and the unpaired losses exist here (``lambda_adversarial`` 1, no
        paired or structure loss): other configs are refused.
        """
        unsupported = {
            "generator": cfg.generator != "resnet",
            "channels": (cfg.channels_a, cfg.channels_b) != (3, 3),
            "lambda_adversarial": cfg.lambda_adversarial != 1.0,
            "lambda_structure": cfg.lambda_structure > 0,
        }
        if any(unsupported.values()):
            names = ", ".join(k for k, v in unsupported.items() if v)
            raise ValueError(f"the torch reference does not implement this config's {names}")
        return cls(
            ngf=cfg.ngf, n_blocks=cfg.n_blocks, ndf=cfg.ndf, n_layers_d=cfg.n_layers_d,
            upsample=cfg.upsample, residual_output=cfg.residual_output,
            lambda_cycle=cfg.lambda_cycle, lambda_identity=cfg.lambda_identity,
            pool_size=cfg.pool_size, lr=cfg.lr, lr_d=cfg.lr_d, beta_1=cfg.beta_1, seed=cfg.seed,
        )

    def parameter_counts(self) -> dict[str, int]:
        return {
            name: sum(p.numel() for p in getattr(self, f"net{name}").parameters())
            for name in ("G_A", "G_B", "D_A", "D_B")
        }

    @staticmethod
    def _gan_loss(prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.tensor(1.0 if target_is_real else 0.0).expand_as(prediction)
        return nn.functional.mse_loss(prediction, target)

    def set_input(self, real_a: torch.Tensor, real_b: torch.Tensor) -> None:
        self.real_A, self.real_B = real_a, real_b

    def forward(self) -> None:
        self.fake_B = self.netG_A(self.real_A)
        self.rec_A = self.netG_B(self.fake_B)
        self.fake_A = self.netG_B(self.real_B)
        self.rec_B = self.netG_A(self.fake_A)

    def backward_G(self) -> None:
        lam, idt = self.lambda_cycle, self.lambda_identity
        if idt > 0:
            self.loss_idt_A = self.criterionIdt(self.netG_A(self.real_B), self.real_B) * lam * idt
            self.loss_idt_B = self.criterionIdt(self.netG_B(self.real_A), self.real_A) * lam * idt
        else:
            self.loss_idt_A = self.loss_idt_B = 0
        self.loss_G_A = self._gan_loss(self.netD_A(self.fake_B), True)
        self.loss_G_B = self._gan_loss(self.netD_B(self.fake_A), True)
        self.loss_cycle_A = self.criterionCycle(self.rec_A, self.real_A) * lam
        self.loss_cycle_B = self.criterionCycle(self.rec_B, self.real_B) * lam
        self.loss_G = (self.loss_G_A + self.loss_G_B + self.loss_cycle_A + self.loss_cycle_B
                       + self.loss_idt_A + self.loss_idt_B)
        self.loss_G.backward()

    def backward_D_basic(self, netD: nn.Module, real: torch.Tensor, fake: torch.Tensor):
        loss_real = self._gan_loss(netD(real), True)
        loss_fake = self._gan_loss(netD(fake.detach()), False)
        loss_D = (loss_real + loss_fake) * 0.5
        loss_D.backward()
        return loss_D

    def optimize_parameters(self) -> None:
        """One training iteration, exactly as the reference's ``CycleGANModel``."""
        self.forward()
        set_requires_grad([self.netD_A, self.netD_B], False)
        self.optimizer_G.zero_grad()
        self.backward_G()
        self.optimizer_G.step()
        set_requires_grad([self.netD_A, self.netD_B], True)
        self.optimizer_D.zero_grad()
        fake_B = self.fake_B_pool.query(self.fake_B)
        self.loss_D_A = self.backward_D_basic(self.netD_A, self.real_B, fake_B)
        fake_A = self.fake_A_pool.query(self.fake_A)
        self.loss_D_B = self.backward_D_basic(self.netD_B, self.real_A, fake_A)
        self.optimizer_D.step()


def to_tensor(batch) -> torch.Tensor:
    """uint8 NHWC numpy -> float NCHW in [-1, 1] (the reference's ToTensor + Normalize(0.5, 0.5)).

    Contiguous NCHW, as the reference's DataLoader hands it over.
    """
    x = torch.from_numpy(batch.copy()).permute(0, 3, 1, 2).float()
    return (x / 127.5 - 1.0).contiguous()
