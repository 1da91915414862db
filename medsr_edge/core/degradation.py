"""The degradation model: how a low-resolution image is made from a ground truth, and the
bicubic baseline (numpy + Pillow; scipy only for the optional blur).

This is *the* degradation: training makes its LR patches with :func:`degrade`, calibration and
the benchmark make their LR images with it too, so scores measure what the model learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage


def resize_bicubic(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of a float 2-D array to (height, width); antialiased when shrinking (Pillow)."""
    h, w = size
    out = PILImage.fromarray(np.ascontiguousarray(img, dtype=np.float32), mode="F").resize(
        (w, h), resample=PILImage.BICUBIC)
    return np.asarray(out, dtype=np.float32)


def crop_to_multiple(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right edge so both sides are multiples of ``scale``."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def degrade(hr: np.ndarray, scale: int, blur_sigma: float = 0.0, noise_sigma: float = 0.0,
            rng: np.random.Generator | None = None, step: float = 0.0) -> np.ndarray:
    """Make the low-resolution image from a ground-truth 2-D float image in [0, 1].

    Default: antialiased bicubic downsampling by ``scale`` (the literature's BI degradation).
    Optional Gaussian blur (sigma in HR pixels) before, and Gaussian noise (sigma in [0,1] units)
    after. ``step`` > 0 rounds the result to multiples of ``step`` (in [0, 1] units): a real
    low-resolution image is stored on its source's value grid (1/255 for 8-bit images, see
    ``Normalizer.grid_step``), never as floats. ``hr`` sides must be multiples of ``scale``
    (see :func:`crop_to_multiple`).
    """
    h, w = hr.shape
    if h % scale or w % scale:
        raise ValueError(f"image {h}x{w} is not a multiple of scale {scale}")
    img = np.asarray(hr, np.float32)
    if blur_sigma > 0:
        from scipy.ndimage import gaussian_filter

        img = gaussian_filter(img, blur_sigma, mode="reflect")
    lr = resize_bicubic(img, (h // scale, w // scale))
    if noise_sigma > 0:
        rng = rng or np.random.default_rng()
        lr = lr + rng.normal(0.0, noise_sigma, lr.shape).astype(np.float32)
    if step > 0:
        lr = (np.round(lr / np.float32(step)) * np.float32(step)).astype(np.float32)
    return np.clip(lr, 0.0, 1.0)


def upscale_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: upscale a 2-D float image by ``scale``."""
    h, w = lr.shape
    return resize_bicubic(lr, (h * scale, w * scale))


def upscale_lanczos(lr: np.ndarray, scale: int) -> np.ndarray:
    """The Lanczos-3 baseline (Pillow), same grid as bicubic."""
    h, w = lr.shape
    out = PILImage.fromarray(np.ascontiguousarray(lr, dtype=np.float32), mode="F").resize(
        (w * scale, h * scale), resample=PILImage.LANCZOS)
    return np.asarray(out, dtype=np.float32)


def sinc_taps(scale: int, radius: int = 8) -> np.ndarray:
    """1-D interpolation taps, shape (scale, 2*radius+1): row p gives HR sub-pixel p of LR pixel i
    from LR pixels i-radius..i+radius. The HR sample sits ``(p - (scale-1)/2) / scale`` LR pixels
    from i (the grid convention below); the taps are ``sinc`` under a Lanczos window of
    ``radius + 1`` lobes, normalised to sum to 1 (flat stays flat)."""
    if radius < 1:
        raise ValueError("radius must be >= 1")
    k = np.arange(-radius, radius + 1)
    rows = []
    for p in range(scale):
        x = (p - (scale - 1) / 2) / scale - k
        w = np.sinc(x) * np.sinc(x / (radius + 1))
        rows.append(w / w.sum())
    return np.stack(rows)


def upscale_sinc(lr: np.ndarray, scale: int, radius: int = 8) -> np.ndarray:
    """Windowed-sinc interpolation (:func:`sinc_taps`, separable, edges replicated), same grid as
    bicubic: close to an MR scanner's zero-filled k-space interpolation without its periodic wrap.
    The ``student-sinc`` network adds its residual to exactly this."""
    taps = sinc_taps(scale, radius).astype(np.float64)
    out = np.asarray(lr, dtype=np.float64)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        win = np.lib.stride_tricks.sliding_window_view(np.pad(out, pad, mode="edge"), 2 * radius + 1, axis=axis)
        up = win @ taps.T  # (..., scale): the sub-pixels of each LR position along ``axis``
        out = np.moveaxis(up, -1, axis + 1).reshape([n * scale if a == axis else n for a, n in enumerate(out.shape)])
    return out.astype(np.float32)


# --------------------------------------------------------------------------- acquisition physics
#
# Each model makes an LR image on the bicubic grid convention: LR pixel j sits at HR coordinate
# s*j + (s-1)/2 (pixel centres), so outputs, geometry and metrics stay comparable across models.
# Images are 2-D float arrays in [0, 1]; sizes are multiples of the scale (crop_to_multiple).

DEGRADATIONS = ("bicubic", "mr-kspace", "ct-kernel", "xr-detector")
KSPACE_WINDOWS = ("none", "hamming", "tukey")
CT_HU_PER_UNIT = 4095.0  # noise in HU -> [0, 1] units: a 12-bit CT range (-1024..3071 HU) is 1


def _check(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name} {value} is out of range: use {lo} to {hi}")


def sigma_from_mtf50(mtf50: float) -> float:
    """Gaussian PSF sigma (pixels) whose MTF falls to 50 % at ``mtf50`` cycles/pixel:
    MTF(f) = exp(-2 pi^2 sigma^2 f^2)."""
    return float(np.sqrt(np.log(2.0) / (2.0 * np.pi ** 2)) / mtf50)


@dataclass(frozen=True, kw_only=True)
class KSpace:
    """MR acquisition: the central 1/scale of k-space per axis, as a scanner with a coarser matrix.

    partial_fourier: share of phase-encode lines (axis 0) acquired, 0.625..1 (the rest zero, no
    homodyne). window: apodisation of the acquired k-space ("none", "hamming", "tukey" with
    ``tukey_alpha`` 0..1). snr: mean foreground signal / noise sigma of the magnitude image, 5..1000,
    or None for no noise (complex Gaussian noise: Rician magnitude)."""

    partial_fourier: float = 1.0
    window: str = "none"
    tukey_alpha: float = 0.5
    snr: float | None = None

    def __post_init__(self) -> None:
        _check("partial_fourier", self.partial_fourier, 0.625, 1.0)
        if self.window not in KSPACE_WINDOWS:
            raise ValueError(f"window {self.window!r}: use {', '.join(KSPACE_WINDOWS)}")
        _check("tukey_alpha", self.tukey_alpha, 0.0, 1.0)
        if self.snr is not None:
            _check("snr", self.snr, 5.0, 1000.0)


@dataclass(frozen=True, kw_only=True)
class CTKernel:
    """CT reconstruction: a Gaussian PSF (``sigma`` in HR pixels, 0..4) then area decimation, and
    Gaussian noise of ``noise_hu`` HU (0..100; :data:`CT_HU_PER_UNIT` HU = 1)."""

    sigma: float = 1.6
    noise_hu: float = 0.0

    def __post_init__(self) -> None:
        _check("sigma", self.sigma, 0.0, 4.0)
        _check("noise_hu", self.noise_hu, 0.0, 100.0)


@dataclass(frozen=True, kw_only=True)
class XRDetector:
    """Radiography: a detector PSF given by its MTF50 (cycles per HR pixel, 0.05..0.5) then area
    decimation, and Poisson-Gaussian noise: variance = signal / photons + read_noise^2, with
    ``photons`` quanta at full scale (100..1e6) and ``read_noise`` in [0, 1] units (0..0.02)."""

    mtf50: float = 0.15
    photons: float | None = None
    read_noise: float = 0.0

    def __post_init__(self) -> None:
        _check("mtf50", self.mtf50, 0.05, 0.5)
        if self.photons is not None:
            _check("photons", self.photons, 100.0, 1e6)
        _check("read_noise", self.read_noise, 0.0, 0.02)


def _phase_ramp(n: int, shift: float) -> np.ndarray:
    """exp(2 pi i k shift / n) over FFT frequencies k of an n-point axis."""
    return np.exp(2j * np.pi * np.fft.fftfreq(n) * shift)


def _window_1d(m: int, kind: str, alpha: float) -> np.ndarray:
    """Apodisation over the FFT frequencies f in [-1/2, 1/2) of m samples, even in f (so it moves
    nothing): Hamming 0.54 + 0.46 cos(2 pi f); Tukey flat for |f| <= (1 - alpha)/2, then a cosine to 0."""
    f = np.abs(np.fft.fftfreq(m))
    if kind == "hamming":
        return 0.54 + 0.46 * np.cos(2 * np.pi * f)
    if kind == "tukey" and alpha > 0:
        t = np.clip((f - (1 - alpha) / 2) / (alpha / 2), 0.0, 1.0)
        return 0.5 * (1 + np.cos(np.pi * t))
    return np.ones(m)


def _crop_centre(k: np.ndarray, m: int, axis: int) -> np.ndarray:
    """The m lowest frequencies (FFT order) of axis ``axis``: -m/2 .. m/2-1."""
    n = k.shape[axis]
    idx = np.r_[0:(m + 1) // 2, n - m // 2:n]
    return np.take(k, idx, axis=axis)


def _pad_centre(k: np.ndarray, n: int, axis: int) -> np.ndarray:
    m = k.shape[axis]
    shape = list(k.shape)
    shape[axis] = n
    out = np.zeros(shape, k.dtype)
    idx = np.r_[0:(m + 1) // 2, n - m // 2:n]
    sl = [slice(None)] * k.ndim
    sl[axis] = idx
    out[tuple(sl)] = k
    return out


def kspace_downsample(hr: np.ndarray, scale: int, params: KSpace = KSpace(),
                      rng: np.random.Generator | None = None) -> np.ndarray:
    """The LR magnitude image an MR scanner with a 1/scale matrix would reconstruct (zero-filled
    partial Fourier, optional apodisation and complex noise); exact for a band-limited, periodic
    image with no window and no noise."""
    h, w = hr.shape
    if h % scale or w % scale:
        raise ValueError(f"image {h}x{w} is not a multiple of scale {scale}")
    d = (scale - 1) / 2.0
    k = np.fft.fft2(np.asarray(hr, np.float64))
    k *= _phase_ramp(h, d)[:, None] * _phase_ramp(w, d)[None, :]
    mh, mw = h // scale, w // scale
    k = _crop_centre(_crop_centre(k, mh, 0), mw, 1)
    k *= _window_1d(mh, params.window, params.tukey_alpha)[:, None] * _window_1d(mw, params.window, params.tukey_alpha)[None, :]
    if params.partial_fourier < 1.0:  # the last lines of the phase-encode axis are not acquired
        f = np.fft.fftfreq(mh)
        k[f > params.partial_fourier - 0.5, :] = 0.0
    img = np.fft.ifft2(k) / (scale * scale)
    if params.snr is not None:
        rng = rng or np.random.default_rng()
        mag = np.abs(img)
        fg = mag[mag > 0.1 * mag.max()] if mag.max() > 0 else mag
        sigma = float(fg.mean()) / params.snr if fg.size else 0.0
        img = img + rng.normal(0.0, sigma, img.shape) + 1j * rng.normal(0.0, sigma, img.shape)
    return np.clip(np.abs(img), 0.0, 1.0).astype(np.float32)


def kspace_upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """Zero-filled k-space (sinc) interpolation by ``scale`` on the same grid convention: what a
    scanner's "interpolate" option does; the inverse of :func:`kspace_downsample` for band-limited
    images."""
    m, n = lr.shape
    d = (scale - 1) / 2.0
    k = np.fft.fft2(np.asarray(lr, np.float64))
    k = _pad_centre(_pad_centre(k, m * scale, 0), n * scale, 1)
    k *= _phase_ramp(m * scale, -d)[:, None] * _phase_ramp(n * scale, -d)[None, :]
    return np.clip(np.fft.ifft2(k).real * scale * scale, 0.0, 1.0).astype(np.float32)


def area_downsample(img: np.ndarray, scale: int) -> np.ndarray:
    """Mean of each scale x scale block (a detector element integrating its area)."""
    h, w = img.shape
    return img.reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3)).astype(np.float32)


def ct_kernel_downsample(hr: np.ndarray, scale: int, params: CTKernel = CTKernel(),
                         rng: np.random.Generator | None = None) -> np.ndarray:
    """LR CT slice: reconstruction-kernel PSF, area decimation, Gaussian noise in HU."""
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(np.asarray(hr, np.float32), params.sigma, mode="reflect") if params.sigma > 0 else np.asarray(hr, np.float32)
    lr = area_downsample(img, scale)
    if params.noise_hu > 0:
        rng = rng or np.random.default_rng()
        lr = lr + rng.normal(0.0, params.noise_hu / CT_HU_PER_UNIT, lr.shape).astype(np.float32)
    return np.clip(lr, 0.0, 1.0)


def detector_downsample(hr: np.ndarray, scale: int, params: XRDetector = XRDetector(),
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """LR radiograph: detector PSF (from MTF50), area decimation, Poisson-Gaussian noise."""
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(np.asarray(hr, np.float32), sigma_from_mtf50(params.mtf50), mode="reflect")
    lr = area_downsample(img, scale)
    if params.photons is not None or params.read_noise > 0:
        rng = rng or np.random.default_rng()
        var = np.clip(lr, 0.0, None) / (params.photons or np.inf) + params.read_noise ** 2
        lr = lr + (rng.standard_normal(lr.shape) * np.sqrt(var)).astype(np.float32)
    return np.clip(lr, 0.0, 1.0).astype(np.float32)


def degrade_with(hr: np.ndarray, scale: int, params: KSpace | CTKernel | XRDetector | None,
                 rng: np.random.Generator | None = None, step: float = 0.0) -> np.ndarray:
    """LR image under an acquisition model (None: :func:`degrade`'s bicubic), rounded to ``step``."""
    if params is None:
        return degrade(hr, scale, rng=rng, step=step)
    fn = {KSpace: kspace_downsample, CTKernel: ct_kernel_downsample, XRDetector: detector_downsample}[type(params)]
    lr = fn(hr, scale, params, rng)
    if step > 0:
        lr = (np.round(lr / np.float32(step)) * np.float32(step)).astype(np.float32)
    return lr


# Training ranges (drawn per patch) and the fixed bench settings, per family. The bench's settings
# lie inside the ranges; a blind test's parameters may be anywhere in them.
def draw_params(kind: str, scale: int, rng: np.random.Generator) -> KSpace | CTKernel | XRDetector | None:
    """Random acquisition parameters of family ``kind`` for one training patch:

    - mr-kspace: window none/hamming/tukey (alpha 0.3-0.8) alike; partial Fourier 1 (half the
      patches) or 0.625-1; SNR log-uniform 20-200, or no noise in 1 of 5;
    - ct-kernel: sigma 0.3-0.6 of the scale (HR pixels), noise 0-30 HU;
    - xr-detector: MTF50 0.08-0.25 cycles/HR pixel, 1e3-1e5 photons at full scale (log-uniform),
      read noise 0-0.003."""
    if kind == "bicubic":
        return None
    if kind == "mr-kspace":
        window = KSPACE_WINDOWS[int(rng.integers(3))]
        pf = 1.0 if rng.random() < 0.5 else float(rng.uniform(0.625, 1.0))
        snr = None if rng.random() < 0.2 else float(np.exp(rng.uniform(np.log(20), np.log(200))))
        return KSpace(partial_fourier=pf, window=window, tukey_alpha=float(rng.uniform(0.3, 0.8)), snr=snr)
    if kind == "ct-kernel":
        return CTKernel(sigma=float(rng.uniform(0.3, 0.6) * scale), noise_hu=float(rng.uniform(0.0, 30.0)))
    if kind == "xr-detector":
        return XRDetector(mtf50=float(rng.uniform(0.08, 0.25)), photons=float(np.exp(rng.uniform(np.log(1e3), np.log(1e5)))),
                          read_noise=float(rng.uniform(0.0, 0.003)))
    raise ValueError(f"degradation {kind!r}: use {', '.join(DEGRADATIONS)}")


BENCH_DEGRADATIONS = (*DEGRADATIONS, "physics")  # physics: each image under its modality's family
FAMILY_OF_MODALITY = {"mri": "mr-kspace", "mr": "mr-kspace", "ct": "ct-kernel", "xray": "xr-detector", "xr": "xr-detector"}


def bench_params(kind: str, scale: int) -> KSpace | CTKernel | XRDetector | None:
    """The fixed, mid-range parameters ``bench --degradation`` uses (noise drawn from a fixed seed)."""
    # MR: a plain truncation (no apodisation) with mild noise, the case where bicubic-trained models
    # fall below the scanner's own zero-filling (a windowed, noisy k-space hides that)
    return {"bicubic": None, "mr-kspace": KSpace(window="none", snr=200.0),
            "ct-kernel": CTKernel(sigma=0.45 * scale, noise_hu=10.0),
            "xr-detector": XRDetector(mtf50=0.15, photons=1e4, read_noise=0.001)}[_known(kind)]


def _known(kind: str) -> str:
    if kind not in DEGRADATIONS:
        raise ValueError(f"degradation {kind!r}: use {', '.join(DEGRADATIONS)}")
    return kind
