"""Synthetic degradations, one function per source, on (3, H, W) float tensors in [0, 1].

Every function takes a ``torch.Generator`` (same seed, same output), works on whole tensors
(no per-pixel Python) and returns a new tensor clipped to [0, 1]. ``TASKS`` maps the task
names used on the command line (``denoise_25``, ``derain``, ...) to a degradation and the
degradation *source* it belongs to (the three noise levels share the source ``denoise``,
as in the published trainer).
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen).item()


def _conv_same(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve each channel of (C, H, W) with a 2-D kernel, reflect padding, same size."""
    kh, kw = kernel.shape
    pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
    x = img[:, None]
    mode = "reflect" if min(img.shape[-2:]) > max(kh, kw) else "replicate"
    return F.conv2d(F.pad(x, pad, mode=mode), kernel[None, None].to(img.dtype))[:, 0]


# ---------------------------------------------------------------- noise
def add_gaussian_noise(img: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Additive white Gaussian noise of std ``sigma`` / 255, clipped (the papers' protocol)."""
    noise = torch.randn(img.shape, generator=gen, dtype=img.dtype) * (sigma / 255.0)
    return (img + noise).clamp(0, 1)


def add_gaussian_noise_range(img: torch.Tensor, gen: torch.Generator, lo: float = 5, hi: float = 55) -> torch.Tensor:
    """Gaussian noise with sigma drawn uniformly from [lo, hi] (for unseen levels)."""
    return add_gaussian_noise(img, _uniform(gen, lo, hi), gen)


# ---------------------------------------------------------------- rain
@dataclass(frozen=True)
class RainSettings:
    """Rain streak parameters; ``light`` resembles Rain100L, ``heavy`` Rain100H."""

    density: tuple[float, float] = (0.0005, 0.0025)  # share of pixels that seed a streak (Rain100L-like)
    length: tuple[float, float] = (20, 60)  # pixels
    angle: tuple[float, float] = (-30, 30)  # degrees from vertical (Rain100L has ~28 deg tilts)
    width: tuple[float, float] = (1.2, 2.2)  # pixels
    softness: tuple[float, float] = (0.0, 1.2)  # Gaussian blur of the streaks, sigma in pixels
    brightness: tuple[float, float] = (0.6, 1.0)
    blend: str = "screen"  # or "add"


RAIN_LIGHT = RainSettings()
RAIN_HEAVY = RainSettings(density=(0.015, 0.04), length=(30, 70), width=(1.8, 3.0), brightness=(0.7, 1.0))


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 2-D Gaussian, 3 sigma wide each side (a 1x1 identity for sigma < 0.1)."""
    r = math.ceil(3 * sigma) if sigma >= 0.1 else 0
    g = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * max(sigma, 0.1) ** 2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def line_kernel(length: float, angle_deg: float, width: float) -> torch.Tensor:
    """A normalised anti-aliased line segment: ``length`` px long, ``angle_deg`` from vertical."""
    size = int(math.ceil(length)) | 1
    r = size // 2
    ys, xs = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    theta = math.radians(angle_deg)
    dy, dx = math.cos(theta), math.sin(theta)
    along = ys * dy + xs * dx
    across = (xs * dy - ys * dx).abs()
    inside = (along.abs() <= length / 2).float()
    k = inside * (1 - (across / width).clamp(max=1))
    return k / k.sum()


def rain_layer(height: int, width: int, gen: torch.Generator, s: RainSettings = RAIN_LIGHT) -> torch.Tensor:
    """A (H, W) rain streak layer in [0, 1]: sparse seeds smeared by one motion line."""
    density = _uniform(gen, *s.density)
    seeds = (torch.rand(height, width, generator=gen) < density).float()
    seeds = seeds * (0.5 + 0.5 * torch.rand(height, width, generator=gen))
    kernel = line_kernel(_uniform(gen, *s.length), _uniform(gen, *s.angle), _uniform(gen, *s.width))
    # Real light rain (Rain100L) is soft and partly transparent, not a crisp 1-px line:
    # blur the line (full convolution, so the kernel grows by the blur's radius).
    blur = gaussian_kernel(_uniform(gen, *s.softness))
    r = blur.shape[-1] // 2
    kernel = F.conv2d(F.pad(kernel[None, None], [2 * r] * 4), blur[None, None])[0, 0]
    streaks = _conv_same(seeds[None], kernel)[0]
    # Each streak spreads its seed over ~length pixels; rescale so that streaks peak near 1.
    streaks = streaks / streaks.amax().clamp(min=1e-6)
    return (streaks * _uniform(gen, *s.brightness)).clamp(0, 1)


def add_rain(img: torch.Tensor, gen: torch.Generator, settings: RainSettings = RAIN_LIGHT) -> torch.Tensor:
    """Rain streaks blended onto the image (screen blend by default, additive optional)."""
    layer = rain_layer(img.shape[-2], img.shape[-1], gen, settings)[None]
    if settings.blend == "screen":
        return 1 - (1 - img) * (1 - layer)
    return (img + layer).clamp(0, 1)


def _choice(gen: torch.Generator, n: int, weights: tuple[float, ...] | None = None) -> int:
    """An index in range(n), uniform or with the given (unnormalised) weights."""
    if weights is None:
        return int(torch.randint(n, (), generator=gen))
    return int(torch.multinomial(torch.tensor(weights), 1, generator=gen))


#: Streak families of the varied rain: Rain100L-like sparse soft streaks, a denser medium
#: rain, short crisp drizzle and Rain100H-like heavy rain.
RAIN_FAMILIES = (
    RAIN_LIGHT,
    RainSettings(density=(0.003, 0.01), length=(15, 45), width=(1.0, 2.0), brightness=(0.4, 0.8)),
    RainSettings(density=(0.004, 0.015), length=(6, 18), width=(0.8, 1.4), softness=(0.0, 0.6), brightness=(0.3, 0.7)),
    RAIN_HEAVY,
)
#: How often each family is drawn, and how often a picture gets one, two or three layers.
RAIN_FAMILY_WEIGHTS = (0.4, 0.25, 0.2, 0.15)
RAIN_LAYER_WEIGHTS = (0.5, 0.35, 0.15)


def raindrops(height: int, width: int, gen: torch.Generator, count: tuple[int, int] = (2, 12)) -> torch.Tensor:
    """A (H, W) mask in [0, 1] of a few soft round drops on the lens (radius 2-5 % of the side)."""
    n = int(torch.randint(count[0], count[1] + 1, (), generator=gen))
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    side = min(height, width)
    centres = torch.rand(n, 2, generator=gen) * torch.tensor([height, width])
    radii = side * (0.02 + 0.03 * torch.rand(n, generator=gen))
    dist = ((ys[None] - centres[:, 0, None, None]) ** 2 + (xs[None] - centres[:, 1, None, None]) ** 2).sqrt()
    return (1.5 * (1 - dist / radii[:, None, None])).clamp(0, 1).amax(0)


def add_rain_varied(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rain from several generators, for models that must help on rain they were not trained on.

    One to three streak layers (each from one of :data:`RAIN_FAMILIES`, angles near one
    common direction), screen, additive or alpha blend; sometimes a rain veil (airlight
    scattered by the rain), a slightly blurred background or drops on the lens.
    """
    h, w = img.shape[-2:]
    direction = _uniform(gen, -25, 25)
    out = img
    for _ in range(1 + _choice(gen, 3, RAIN_LAYER_WEIGHTS)):
        family = RAIN_FAMILIES[_choice(gen, len(RAIN_FAMILIES), RAIN_FAMILY_WEIGHTS)]
        spread = _uniform(gen, -8, 8)
        settings = dataclasses.replace(family, angle=(direction + spread, direction + spread))
        layer = rain_layer(h, w, gen, settings)[None]
        blend = _choice(gen, 3)
        if blend == 0:
            out = 1 - (1 - out) * (1 - layer)
        elif blend == 1:
            out = out + layer
        else:
            out = out * (1 - layer) + layer * _uniform(gen, 0.7, 1.0)
        out = out.clamp(0, 1)
    if torch.rand((), generator=gen) < 0.3:  # veil: the haze that heavy rain brings
        veil = _uniform(gen, 0.05, 0.25)
        out = out * (1 - veil) + veil * _uniform(gen, 0.7, 1.0)
    if torch.rand((), generator=gen) < 0.2:
        out = _conv_same(out, gaussian_kernel(_uniform(gen, 0.3, 0.9)))
    if torch.rand((), generator=gen) < 0.2:  # drops: blurred, slightly brighter discs
        mask = raindrops(h, w, gen)[None]
        blurred = _conv_same(out, gaussian_kernel(_uniform(gen, 1.5, 3.0)))
        out = out * (1 - mask) + (blurred * 0.9 + 0.1) * mask
    return out.clamp(0, 1)


def _top_share_threshold(x: torch.Tensor, share: float) -> torch.Tensor:
    """The value above which the brightest ``share`` of ``x``'s elements lie."""
    flat = x.flatten()
    k = min(flat.numel(), max(1, int(round(flat.numel() * (1 - share)))))
    return flat.kthvalue(k).values


@dataclass(frozen=True)
class StreakRecipe:
    """The Photoshop recipe of the published rain sets (Rain12, Rain100L/H, Rain800, Rain1400):
    add monochrome noise, Gaussian blur, Levels to keep the brightest ``density`` share as
    drops, Motion Blur at an angle, Levels to the streaks' ``peak``, screen blend."""

    density: tuple[float, float] = (0.0015, 0.012)  # share of pixels kept as drops by Levels
    grain: tuple[float, float] = (0.7, 1.5)  # Gaussian blur of the noise, sigma in pixels
    length: tuple[float, float] = (15, 45)  # Motion Blur distance, pixels
    angle: tuple[float, float] = (-25, 25)  # degrees from vertical
    peak: tuple[float, float] = (0.35, 0.9)  # the streaks' brightest value after Levels


#: Rain100L-like: one layer of sparse, soft, moderately long streaks.
STREAKS_LIGHT = StreakRecipe()
#: A second, denser layer of shorter, fainter streaks (Rain1400/Rain800-like fine rain).
STREAKS_FINE = StreakRecipe(density=(0.01, 0.04), grain=(0.2, 0.5), length=(5, 18), peak=(0.12, 0.4))


def photoshop_rain_layer(
    height: int, width: int, gen: torch.Generator, recipe: StreakRecipe = STREAKS_LIGHT, angle: float | None = None
) -> torch.Tensor:
    """A (H, W) rain layer in [0, 1] made as the published sets made theirs (:class:`StreakRecipe`);
    ``angle`` (degrees from vertical) overrides the recipe's range."""
    noise = torch.rand(height, width, generator=gen)
    noise = _conv_same(noise[None], gaussian_kernel(_uniform(gen, *recipe.grain)))[0]
    black = _top_share_threshold(noise, _uniform(gen, *recipe.density))
    drops = ((noise - black) / (noise.amax() - black).clamp(min=1e-6)).clamp(0, 1)
    theta = _uniform(gen, *recipe.angle) if angle is None else angle
    streaks = _conv_same(drops[None], line_kernel(_uniform(gen, *recipe.length), theta, 1.0))[0]
    white = _top_share_threshold(streaks, 0.002).clamp(min=1e-6)
    return (streaks / white * _uniform(gen, *recipe.peak)).clamp(0, 1)


def add_rain_photoshop(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rain as the published sets rendered it: one :data:`STREAKS_LIGHT` layer, and in 40 % of
    pictures a :data:`STREAKS_FINE` layer at nearly the same angle, screen-blended."""
    h, w = img.shape[-2:]
    angle = _uniform(gen, *STREAKS_LIGHT.angle)
    out = 1 - (1 - img) * (1 - photoshop_rain_layer(h, w, gen, STREAKS_LIGHT, angle)[None])
    if torch.rand((), generator=gen) < 0.4:
        fine = photoshop_rain_layer(h, w, gen, STREAKS_FINE, angle + _uniform(gen, -5, 5))
        out = 1 - (1 - out) * (1 - fine[None])
    return out.clamp(0, 1)


# ---------------------------------------------------------------- haze
def depth_proxy(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A plausible relative depth in [0, 1] (1 = far): a tilted vertical ramp (far at the top)
    mixed with smoothed brightness (bright, low-saturation regions such as sky are far)."""
    h, w = img.shape[-2:]
    ys = torch.linspace(1, 0, h)[:, None].expand(h, w)
    xs = torch.linspace(-0.5, 0.5, w)[None, :].expand(h, w)
    ramp = ys + _uniform(gen, -0.3, 0.3) * xs
    lum = img.mean(0)
    sat = img.amax(0) - img.amin(0)
    cue = (lum - sat).clamp(0, 1)
    k = max(3, (min(h, w) // 8) | 1)
    box = torch.ones(k, k) / (k * k)
    cue = _conv_same(cue[None], box)[0]
    mix = _uniform(gen, 0.4, 0.8)
    d = mix * ramp + (1 - mix) * cue
    return (d - d.min()) / (d.max() - d.min()).clamp(min=1e-6)


def transmission(depth: torch.Tensor, beta: float) -> torch.Tensor:
    """t = exp(-beta * d), in (0, 1]."""
    return torch.exp(-beta * depth)


def add_haze(
    img: torch.Tensor,
    gen: torch.Generator,
    beta: tuple[float, float] = (0.6, 1.8),
    airlight: tuple[float, float] = (0.7, 1.0),
) -> torch.Tensor:
    """Atmospheric scattering: I = J t + A (1 - t), t = exp(-beta d), slightly tinted airlight."""
    t = transmission(depth_proxy(img, gen), _uniform(gen, *beta))[None]
    a = _uniform(gen, *airlight)
    tint = 1 + 0.05 * (torch.rand(3, 1, 1, generator=gen) - 0.5)
    return (img * t + (a * tint).clamp(0, 1) * (1 - t)).clamp(0, 1)


def _smooth_field(height: int, width: int, gen: torch.Generator, cells: int) -> torch.Tensor:
    """A (H, W) smooth random field in [0, 1]: a ``cells`` x ``cells`` grid, bicubic upsampled."""
    grid = torch.rand(1, 1, cells, cells, generator=gen)
    field = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)[0, 0]
    return (field - field.min()) / (field.max() - field.min()).clamp(min=1e-6)


def depth_proxies(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A relative depth in [0, 1] from one of several proxies (or a mix of two): the
    ramp-and-brightness proxy of :func:`depth_proxy`, a horizon (far above a random row), a
    dark-channel cue (bright local minima are far) and a smooth random field."""
    h, w = img.shape[-2:]

    def horizon() -> torch.Tensor:
        row = _uniform(gen, 0.2, 0.7)
        ys = torch.linspace(0, 1, h)[:, None].expand(h, w)
        return torch.where(ys < row, 1.0, (1 - (ys - row) / (1 - row)).clamp(0, 1) * 0.9)

    def dark_channel() -> torch.Tensor:
        k = max(3, (min(h, w) // 16) | 1)
        dark = -F.max_pool2d(-img.amin(0)[None, None], k, stride=1, padding=k // 2)[0, 0]
        return _conv_same(dark[None], torch.ones(k, k) / (k * k))[0]

    proxies = (
        lambda: depth_proxy(img, gen),
        horizon,
        dark_channel,
        lambda: _smooth_field(h, w, gen, 2 + _choice(gen, 4)),
    )
    d = proxies[_choice(gen, len(proxies))]()
    if torch.rand((), generator=gen) < 0.4:
        mix = _uniform(gen, 0.2, 0.8)
        d = mix * d + (1 - mix) * proxies[_choice(gen, len(proxies))]()
    return (d - d.min()) / (d.max() - d.min()).clamp(min=1e-6)


def add_haze_varied(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Haze from several generators: one of :func:`depth_proxies`, beta 0.4-2.2 (sometimes
    non-homogeneous, modulated by a smooth field), airlight 0.6-1.0 with a colour tint of up
    to ±8 % per channel."""
    h, w = img.shape[-2:]
    beta = _uniform(gen, 0.4, 2.2)
    if torch.rand((), generator=gen) < 0.3:
        beta = beta * (0.6 + 0.8 * _smooth_field(h, w, gen, 3))
    t = torch.exp(-beta * depth_proxies(img, gen))[None]
    tint = 1 + 0.16 * (torch.rand(3, 1, 1, generator=gen) - 0.5)
    airlight = (_uniform(gen, 0.6, 1.0) * tint).clamp(0, 1)
    return (img * t + airlight * (1 - t)).clamp(0, 1)


# ---------------------------------------------------------------- blur
def motion_kernel(gen: torch.Generator, size: int = 21, steps: int = 64, intensity: float = 0.6) -> torch.Tensor:
    """A random camera-shake trajectory rasterised with bilinear splats, summing to 1."""
    velocity = torch.randn(steps, 2, generator=gen) * intensity
    momentum = torch.cumsum(velocity, 0) * 0.3 + torch.randn(1, 2, generator=gen)
    path = torch.cumsum(momentum, 0)
    path = path - path.mean(0)
    extent = path.abs().max().clamp(min=1e-6)
    path = path / extent * (size / 2 - 1.5) * _uniform(gen, 0.3, 1.0) + size // 2
    y0, x0 = path.floor().long().unbind(1)
    fy, fx = (path - path.floor()).unbind(1)
    k = torch.zeros(size, size)
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        k.index_put_(((y0 + dy).clamp(0, size - 1), (x0 + dx).clamp(0, size - 1)), wgt, accumulate=True)
    return k / k.sum()


def add_motion_blur(img: torch.Tensor, gen: torch.Generator, size: int = 21) -> torch.Tensor:
    """Blur with a random motion-trajectory kernel (reflect borders)."""
    return _conv_same(img, motion_kernel(gen, size)).clamp(0, 1)


# ---------------------------------------------------------------- low light
def add_low_light(
    img: torch.Tensor,
    gen: torch.Generator,
    exposure: tuple[float, float] = (0.08, 0.35),
    gamma: tuple[float, float] = (1.2, 1.8),
    peak: tuple[float, float] = (40, 200),
    read_noise: tuple[float, float] = (0.002, 0.01),
) -> torch.Tensor:
    """Under-exposure: I = scale * J**gamma, then Poisson shot noise (``peak`` photons at
    white) and Gaussian read noise."""
    dark = _uniform(gen, *exposure) * img.clamp(0, 1) ** _uniform(gen, *gamma)
    photons = _uniform(gen, *peak)
    shot = torch.poisson(dark * photons, generator=gen) / photons
    read = torch.randn(img.shape, generator=gen) * _uniform(gen, *read_noise)
    return (shot + read).clamp(0, 1)


# ---------------------------------------------------------------- JPEG
def add_jpeg(img: torch.Tensor, gen: torch.Generator, quality: tuple[int, int] = (10, 40)) -> torch.Tensor:
    """JPEG round trip at a quality drawn from ``quality`` (inclusive)."""
    q = int(torch.randint(quality[0], quality[1] + 1, (), generator=gen))
    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=q)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------- content conditions
def add_content_condition(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One photographic condition that is part of the picture, not a degradation the model
    removes: soft focus, a little camera shake, JPEG compression, under- or over-exposure, a
    downscaled photo, a colour cast. Training puts it in input *and* target, so the model learns
    to leave what it was not trained to remove as it is."""
    kind = _choice(gen, 6)
    if kind == 0:
        return _conv_same(img, gaussian_kernel(_uniform(gen, 0.5, 1.6))).clamp(0, 1)
    if kind == 1:
        return _conv_same(img, motion_kernel(gen, 9)).clamp(0, 1)
    if kind == 2:
        return add_jpeg(img, gen, quality=(25, 90))
    if kind == 3:
        return (_uniform(gen, 0.3, 1.3) * img.clamp(0, 1) ** _uniform(gen, 0.7, 1.5)).clamp(0, 1)
    if kind == 4:
        h, w = img.shape[-2:]
        scale = _uniform(gen, 0.35, 0.7)
        small = F.interpolate(
            img[None], scale_factor=scale, mode="bilinear", antialias=True, recompute_scale_factor=True
        )
        return F.interpolate(small, size=(h, w), mode="bicubic")[0].clamp(0, 1)
    cast = 1 + 0.3 * (torch.rand(3, 1, 1, generator=gen) - 0.5)
    return (img * cast).clamp(0, 1)


def _fractal_field(height: int, width: int, gen: torch.Generator, octaves: int = 5) -> torch.Tensor:
    """A (H, W) cloud-like field in [0, 1]: smooth fields at doubling frequencies, each
    octave at 0.55 times the amplitude of the one before."""
    cells = 2 + _choice(gen, 3)
    field = sum(0.55**o * _smooth_field(height, width, gen, cells * 2**o) for o in range(octaves))
    return (field - field.min()) / (field.max() - field.min()).clamp(min=1e-6)


def add_sky(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A cloudy or overcast sky that is part of the picture: fractal clouds over a blue-to-grey
    gradient, filling the frame (a plane against the clouds), above a soft horizon, or in the
    photo's own bright, low-saturation regions (its sky, a backlit haze). Training puts it in
    input *and* target, so that bright, soft, low-contrast content is not taken for haze."""
    h, w = img.shape[-2:]
    ys = torch.linspace(0, 1, h)[:, None]
    blue = torch.tensor([0.42, 0.58, 0.85])[:, None, None] * _uniform(gen, 0.75, 1.1)
    grey = torch.full((3, 1, 1), _uniform(gen, 0.55, 0.9))
    overcast = _uniform(gen, 0, 1)
    base = (1 - overcast) * blue + overcast * grey
    base = base * (1 + _uniform(gen, 0, 0.25) * ys)  # brighter towards the horizon
    cover = _fractal_field(h, w, gen)
    density = ((cover - _uniform(gen, 0.1, 0.6)) / _uniform(gen, 0.15, 0.5)).clamp(0, 1)
    shading = 1 - _uniform(gen, 0.1, 0.4) * _fractal_field(h, w, gen)  # grey undersides
    tint = 1 + 0.06 * (torch.rand(3, 1, 1, generator=gen) - 0.5)
    cloud = _uniform(gen, 0.75, 1.0) * tint * shading
    sky = ((1 - density) * base + density * cloud).clamp(0, 1)
    kind = _choice(gen, 3)
    if kind == 0:
        mask = torch.ones(h, w)
    elif kind == 1:
        row, soft = _uniform(gen, 0.25, 0.8), _uniform(gen, 0.01, 0.1)
        mask = (1 - (ys - row) / soft).clamp(0, 1).expand(h, w)
    else:
        bright, sat = img.amax(0), img.amax(0) - img.amin(0)
        mask = ((bright - 0.55) / 0.2).clamp(0, 1) * (1 - sat / 0.35).clamp(0, 1)
        mask = _conv_same(mask[None], gaussian_kernel(2.0))[0]
    return img * (1 - mask) + sky * mask


def keep_as_is(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The identity "degradation": a clean photo whose restoration is itself."""
    return img.clone()


# ---------------------------------------------------------------- task table
Degrade = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Task:
    """A named degradation and the source (Kantorovich potential) it belongs to."""

    name: str
    source: str
    degrade: Degrade


def _noise(sigma: float) -> Degrade:
    return lambda img, gen: add_gaussian_noise(img, sigma, gen)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("denoise_15", "denoise", _noise(15)),
        Task("denoise_25", "denoise", _noise(25)),
        Task("denoise_50", "denoise", _noise(50)),
        Task("denoise", "denoise", add_gaussian_noise_range),
        Task("derain", "derain", add_rain),
        Task("derain_heavy", "derain", lambda img, gen: add_rain(img, gen, RAIN_HEAVY)),
        Task("derain_mix", "derain", add_rain_varied),
        Task("derain_ps", "derain", add_rain_photoshop),
        Task("dehaze", "dehaze", add_haze),
        Task("dehaze_mix", "dehaze", add_haze_varied),
        Task("deblur", "deblur", add_motion_blur),
        Task("lowlight", "lowlight", add_low_light),
        Task("jpeg", "jpeg", add_jpeg),
        Task("identity", "clean", keep_as_is),
    )
}


def get_task(name: str) -> Task:
    """Look up a task by name; the error lists the valid ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None


def degrade(img: torch.Tensor, task: str, seed: int) -> torch.Tensor:
    """Apply ``task`` to a (3, H, W) image with a generator seeded by ``seed``."""
    return get_task(task).degrade(img, torch.Generator().manual_seed(seed))
