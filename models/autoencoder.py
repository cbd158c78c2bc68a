"""The swap autoencoder: a shared encoder, and per-identity decoding, in two variants.

``df``   one encoder + one inter (both shared) and one decoder per identity (src and dst). Swapping
         feeds a dst face's code to the src decoder. Keeps the src identity best; needs faces of
         similar shape.
``liae`` one encoder, two inters (``inter_ab`` sees both identities, ``inter_b`` only dst) and one
         shared decoder. A src face is decoded from ``[ab, ab]``, a dst face from ``[b, ab]``, the swap
         from a dst face's ``[ab, ab]``. Follows the dst's shape and lighting more closely, for very
         different faces.

Every decoder has two heads: RGB (sigmoid, 0..1) and a face mask (sigmoid). Tensors are NCHW float,
RGB, 0..1; resolution is a multiple of 16 in 64..512. This module imports torch, so only training and
export code imports it (never ``import facecomp``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import SettingsError

ARCHS = ("df", "liae")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters; saved with every checkpoint and fixed for a model's life."""

    resolution: int = 128
    arch: str = "df"
    e_dims: int = 64         # encoder width (first layer channels)
    ae_dims: int = 256       # bottleneck (code) size
    d_dims: int = 64         # RGB decoder width
    d_mask_dims: int = 22    # mask decoder width

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise SettingsError(f"unknown architecture {self.arch!r}: use one of {', '.join(ARCHS)}")
        if not (64 <= self.resolution <= 512 and self.resolution % 16 == 0):
            raise SettingsError(f"resolution {self.resolution} must be a multiple of 16 in 64..512")
        for name in ("e_dims", "ae_dims", "d_dims", "d_mask_dims"):
            v = getattr(self, name)
            if not 1 <= v <= 4096:
                raise SettingsError(f"{name} {v} outside 1..4096")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        fields = {k: d[k] for k in ("resolution", "arch", "e_dims", "ae_dims", "d_dims", "d_mask_dims") if k in d}
        return cls(**fields)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1)


class Down(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 5, stride=2, padding=2)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class Up(nn.Module):
    """Conv to 4x channels then pixel shuffle: a learnt 2x upscale without checkerboard artefacts."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout * 4, 3, padding=1)
        self.act = _act()
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.act(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = _act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.c2(self.act(self.c1(x))))


class Encoder(nn.Module):
    def __init__(self, e_dims: int):
        super().__init__()
        self.blocks = nn.Sequential(Down(3, e_dims), Down(e_dims, e_dims * 2), Down(e_dims * 2, e_dims * 4),
                                    Down(e_dims * 4, e_dims * 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.blocks(x), 1)


class Inter(nn.Module):
    """Dense bottleneck: the encoder's features -> ``ae_dims`` code -> a small feature map at res/8."""

    def __init__(self, in_features: int, ae_dims: int, low: int, out_ch: int):
        super().__init__()
        self.low, self.out_ch = low, out_ch
        self.fc1 = nn.Linear(in_features, ae_dims)
        self.fc2 = nn.Linear(ae_dims, low * low * out_ch)
        self.up = Up(out_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc2(self.fc1(x))
        return self.up(x.view(-1, self.out_ch, self.low, self.low))


class Decoder(nn.Module):
    """res/8 feature map -> RGB (3ch) and mask (1ch) at full resolution, both sigmoid."""

    def __init__(self, cin: int, d_dims: int, d_mask_dims: int):
        super().__init__()
        d, m = d_dims, d_mask_dims
        self.rgb = nn.Sequential(Up(cin, d * 8), Residual(d * 8), Up(d * 8, d * 4), Residual(d * 4),
                                 Up(d * 4, d * 2), Residual(d * 2))
        self.rgb_out = nn.Conv2d(d * 2, 3, 1)
        self.mask = nn.Sequential(Up(cin, m * 8), Up(m * 8, m * 4), Up(m * 4, m * 2))
        self.mask_out = nn.Conv2d(m * 2, 1, 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(self.rgb_out(self.rgb(z))), torch.sigmoid(self.mask_out(self.mask(z)))


class SwapAutoencoder(nn.Module):
    """Both variants behind one interface: :meth:`reconstruct_src`, :meth:`reconstruct_dst`, :meth:`swap`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        low = c.resolution // 16
        enc_out = c.e_dims * 8 * low * low
        self.encoder = Encoder(c.e_dims)
        if c.arch == "df":
            self.inter = Inter(enc_out, c.ae_dims, low, c.ae_dims)
            self.decoder_src = Decoder(c.ae_dims, c.d_dims, c.d_mask_dims)
            self.decoder_dst = Decoder(c.ae_dims, c.d_dims, c.d_mask_dims)
        else:
            self.inter_ab = Inter(enc_out, c.ae_dims, low, c.ae_dims)
            self.inter_b = Inter(enc_out, c.ae_dims, low, c.ae_dims)
            self.decoder = Decoder(c.ae_dims * 2, c.d_dims, c.d_mask_dims)

    def reconstruct_src(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.encoder(x)
        if self.config.arch == "df":
            return self.decoder_src(self.inter(e))
        ab = self.inter_ab(e)
        return self.decoder(torch.cat([ab, ab], 1))

    def reconstruct_dst(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.encoder(x)
        if self.config.arch == "df":
            return self.decoder_dst(self.inter(e))
        return self.decoder(torch.cat([self.inter_b(e), self.inter_ab(e)], 1))

    def swap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A dst face -> (dst mask, src-identity face, its mask): what a .dfm computes."""
        e = self.encoder(x)
        if self.config.arch == "df":
            code = self.inter(e)
            _, dst_mask = self.decoder_dst(code)
            celeb, celeb_mask = self.decoder_src(code)
        else:
            ab = self.inter_ab(e)
            _, dst_mask = self.decoder(torch.cat([self.inter_b(e), ab], 1))
            celeb, celeb_mask = self.decoder(torch.cat([ab, ab], 1))
        return dst_mask, celeb, celeb_mask


class PatchDiscriminator(nn.Module):
    """A small PatchGAN critic (one logit per ~30 px patch) for the optional adversarial loss: it
    pushes the src decoder towards sharp skin texture that MSE/SSIM alone average away."""

    def __init__(self, ch: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, ch, 4, 2, 1), _act(),
            nn.Conv2d(ch, ch * 2, 4, 2, 1), _act(),
            nn.Conv2d(ch * 2, ch * 4, 4, 2, 1), _act(),
            nn.Conv2d(ch * 4, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    ax = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).to(dtype)
    return w.expand(channels, 1, size, size).contiguous()


def dssim(a: torch.Tensor, b: torch.Tensor, kernel: int | None = None) -> torch.Tensor:
    """Structural dissimilarity (1 - SSIM) / 2, Gaussian window scaled with the resolution (about
    res/11.6 px, as the DeepFaceLab recipe does) so that it measures structure at face-feature scale."""
    c = a.shape[1]
    if kernel is None:
        kernel = max(3, int(a.shape[-1] / 11.6)) | 1
    sigma = 1.5 * kernel / 11
    w = _gaussian_window(kernel, sigma, c, a.device, a.dtype)
    mu_a = F.conv2d(a, w, groups=c)
    mu_b = F.conv2d(b, w, groups=c)
    saa = F.conv2d(a * a, w, groups=c) - mu_a ** 2
    sbb = F.conv2d(b * b, w, groups=c) - mu_b ** 2
    sab = F.conv2d(a * b, w, groups=c) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return ((1 - ssim) / 2).mean()


def reconstruction_loss(pred: torch.Tensor, pred_mask: torch.Tensor, target: torch.Tensor,
                        target_mask: torch.Tensor) -> torch.Tensor:
    """10 x DSSIM + 10 x MSE inside the face mask, plus 10 x mask MSE: the face region is what the
    swap shows, so background errors do not compete with it for the model's capacity."""
    m = target_mask
    p, t = pred * m, target * m
    return 10 * dssim(p, t) + 10 * F.mse_loss(p, t) + 10 * F.mse_loss(pred_mask, m)
