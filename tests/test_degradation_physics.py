"""Acquisition models (MR k-space, CT kernel, X-ray detector): exactness, noise level, geometry, ranges."""

from __future__ import annotations

import numpy as np
import pytest

from medsr_edge.core.degradation import (
    CT_HU_PER_UNIT,
    CTKernel,
    KSpace,
    XRDetector,
    bench_params,
    ct_kernel_downsample,
    degrade,
    degrade_with,
    detector_downsample,
    draw_params,
    kspace_downsample,
    kspace_upsample,
)

N, S = 96, 4


def band_limited(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A periodic image over N pixels whose frequencies are all below the LR Nyquist (N/S/2 = 12)."""
    return (0.5 + 0.2 * np.cos(2 * np.pi * 3 * x / N + 0.3) + 0.1 * np.sin(2 * np.pi * 5 * y / N)
            + 0.08 * np.cos(2 * np.pi * (7 * x + 4 * y) / N + 1.1))


def test_kspace_crop_of_a_band_limited_image_is_exact_and_on_the_bicubic_grid():
    yy, xx = np.mgrid[0:N, 0:N].astype(np.float64)
    lr = kspace_downsample(band_limited(xx, yy), S)
    j = np.arange(N // S) * S + (S - 1) / 2  # LR pixel j sits at HR s*j + (s-1)/2
    want = band_limited(j[None, :], j[:, None])
    np.testing.assert_allclose(lr, want, atol=1e-5)
    np.testing.assert_allclose(kspace_upsample(lr, S), band_limited(xx, yy), atol=1e-5)  # zero-filling inverts it


@pytest.mark.parametrize("make, sigma", [
    (lambda img, rng: kspace_downsample(img, S, KSpace(snr=50.0), rng), 0.5 / 50.0),
    (lambda img, rng: ct_kernel_downsample(img, S, CTKernel(sigma=1.0, noise_hu=20.0), rng), 20.0 / CT_HU_PER_UNIT),
    (lambda img, rng: detector_downsample(img, S, XRDetector(photons=1e4, read_noise=0.002), rng), np.sqrt(0.5 / 1e4 + 0.002 ** 2)),
])
def test_measured_noise_equals_the_requested_level(make, sigma):
    flat = np.full((4 * N, 4 * N), 0.5, np.float32)
    measured = float(np.std(make(flat, np.random.default_rng(0))))
    assert measured == pytest.approx(sigma, rel=0.05)


def _centroid(img: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return np.array([(img * yy).sum(), (img * xx).sum()]) / img.sum()


@pytest.mark.parametrize("params", [None, KSpace(), KSpace(window="hamming"), KSpace(window="tukey", partial_fourier=0.75),
                                    CTKernel(sigma=2.0), XRDetector(mtf50=0.1)])
def test_a_disc_does_not_move_under_any_model(params):
    yy, xx = np.mgrid[0:N, 0:N].astype(np.float64)
    disc = 0.1 + 0.8 / (1 + np.exp((np.hypot(yy - 41.3, xx - 53.6) - 12.0) / 1.5))  # smooth edge, off the grid centre
    lr = degrade_with(disc.astype(np.float32), S, params)
    hr_pos = _centroid(lr - 0.1) * S + (S - 1) / 2  # minus the known background: ringing may undershoot it
    assert np.allclose(hr_pos, _centroid(disc - 0.1), atol=0.1), (params, hr_pos)


def test_bicubic_keeps_its_own_behaviour():
    img = np.random.default_rng(1).random((N, N)).astype(np.float32)
    np.testing.assert_array_equal(degrade_with(img, S, None), degrade(img, S))


@pytest.mark.parametrize("make, text", [
    (lambda: KSpace(snr=2.0), "snr 2.0 is out of range: use 5.0 to 1000.0"),
    (lambda: KSpace(partial_fourier=0.4), "partial_fourier"),
    (lambda: KSpace(window="kaiser"), "none, hamming, tukey"),
    (lambda: CTKernel(sigma=-1.0), "sigma -1.0 is out of range"),
    (lambda: XRDetector(mtf50=0.9), "mtf50 0.9 is out of range: use 0.05 to 0.5"),
    (lambda: draw_params("pet", 4, np.random.default_rng()), "bicubic, mr-kspace, ct-kernel, xr-detector"),
    (lambda: bench_params("ultrasound", 4), "use bicubic"),
])
def test_parameters_out_of_range_are_refused_with_the_range(make, text):
    with pytest.raises(ValueError, match=text.replace("(", r"\(").replace(".", r"\.")):
        make()


def test_training_draws_stay_inside_the_documented_ranges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = draw_params("mr-kspace", S, rng)
        assert k.snr is None or 20 <= k.snr <= 200
        c = draw_params("ct-kernel", S, rng)
        assert 0.3 * S <= c.sigma <= 0.6 * S and c.noise_hu <= 30
        x = draw_params("xr-detector", S, rng)
        assert 0.08 <= x.mtf50 <= 0.25 and 1e3 <= x.photons <= 1e5


def test_training_patches_follow_the_requested_family(phantom_dir):
    from medsr_edge.distill.data import PatchSampler, load_samples

    samples = load_samples(phantom_dir, "train")
    hr = samples[0].hr[:64, :64]
    bicubic = degrade(hr, S)
    kspace = PatchSampler(samples, 32, S, seed=0, degradation="mr-kspace")
    assert kspace.family("ct") == "mr-kspace"
    assert not np.allclose(kspace.lr_of(hr, 0.0, "ct"), bicubic, atol=1e-3)
    mixed = PatchSampler(samples, 32, S, seed=0, degradation="mixed")
    families = [mixed.family("ct") for _ in range(2000)]
    assert abs(families.count("bicubic") / 2000 - 0.5) < 0.05 and set(families) == {"bicubic", "ct-kernel"}
    assert {mixed.family("pet") for _ in range(50)} == {"bicubic"}  # no family for the modality: bicubic
    with pytest.raises(ValueError, match="mixed"):
        PatchSampler(samples, 32, S, degradation="gibbs")


def test_bench_under_mr_physics_adds_the_scanner_baselines(phantom_dir):
    from medsr_edge.core.errors import MedsrError
    from medsr_edge.eval import benchmark as bm

    images = bm.load_bench_images(phantom_dir, S, split="test", degradation="mr-kspace")
    again = bm.load_bench_images(phantom_dir, S, split="test", degradation="mr-kspace")
    assert all(np.array_equal(a.lr, b.lr) for a, b in zip(images, again))  # fixed noise seeds: runs compare
    plain = bm.load_bench_images(phantom_dir, S, split="test")
    assert not np.allclose(images[0].lr, plain[0].lr, atol=1e-3)
    rows = bm.run_benchmark(images, S, [], ["onnxruntime"], latency_rounds=0, baselines=bm.baselines_for("mr-kspace"))
    assert [r.name for r in rows] == ["bicubic", "lanczos", "sinc", "zero-filled"]
    assert bm.baselines_for("bicubic") == () and bm.baselines_for("ct-kernel") == ("lanczos", "sinc")
    with pytest.raises(MedsrError, match="physics"):
        bm.load_bench_images(phantom_dir, S, degradation="gibbs")


@pytest.mark.parametrize("scale", [2, 4])
def test_sinc_interpolation_is_the_sinc_students_anchor(scale):
    """upscale_sinc (numpy, the bench's "sinc" row) is what student-sinc starts from (its residual
    zero at initialisation), on a non-square image with edges; and it interpolates a smooth
    signal far better than bicubic on the same grid."""
    torch = pytest.importorskip("torch")
    from medsr_edge.core.degradation import upscale_bicubic, upscale_sinc
    from medsr_edge.models import build_model

    rng = np.random.default_rng(0)
    lr = rng.random((19, 27)).astype(np.float32)
    net = build_model("student-sinc", scale=scale).double().eval()
    with torch.no_grad():
        want = net(torch.from_numpy(lr.astype(np.float64))[None, None])[0, 0].numpy()
    assert np.abs(upscale_sinc(lr, scale) - want).max() < 1e-5
    n, f = 64, 0.3  # cycles per LR pixel: below Nyquist (0.5), where bicubic already blurs
    y = np.arange(n)
    lr = (0.5 + 0.3 * np.cos(2 * np.pi * f * y))[:, None] * np.ones((1, n))
    hr_y = (np.arange(n * scale) - (scale - 1) / 2) / scale
    truth = (0.5 + 0.3 * np.cos(2 * np.pi * f * hr_y))[:, None] * np.ones((1, n * scale))
    m = 12 * scale
    err_sinc = np.abs(upscale_sinc(lr, scale) - truth)[m:-m, m:-m].max()
    err_bicubic = np.abs(upscale_bicubic(lr.astype(np.float32), scale) - truth)[m:-m, m:-m].max()
    assert err_sinc < 5e-3 and err_sinc < err_bicubic / 10
