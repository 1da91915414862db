import copy

import pytest

torch = pytest.importorskip("torch")

from medsr_edge.models import CONFIGS, RepConv, RepSRNet, build_model, count_params, gflops_per_output_mpx  # noqa: E402


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.data += 0.05 * torch.randn(p.shape, generator=g)
    return model


@pytest.mark.parametrize("in_ch,out_ch", [(8, 8), (1, 8), (8, 16)])
def test_repconv_fused_equals_branched(in_ch, out_ch):
    conv = _perturb(RepConv(in_ch, out_ch)).eval()
    x = torch.rand(2, in_ch, 13, 17)
    ref = conv(x)
    conv.reparameterize()
    assert conv.fused is not None and not hasattr(conv, "conv3")
    assert torch.allclose(conv(x), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("config", ["student-fast", "student", "student-quality", "student-v1", "student-sinc"])
def test_student_reparameterized_equals_training_form(scale, config):
    """In float64, so the comparison sees the folding and not float32 rounding (the attention
    products of RepPFANet amplify values, and with them rounding, well past 1e-5)."""
    net = _perturb(build_model(config, scale=scale)).double().eval()
    x = torch.rand(1, 1, 21, 30, dtype=torch.float64)
    ref = net(x)
    deploy = copy.deepcopy(net).reparameterize()
    assert deploy.is_deploy
    out = deploy(x)
    assert out.shape == (1, 1, 21 * scale, 30 * scale)
    assert torch.allclose(out, ref, atol=1e-9, rtol=1e-9)


def test_pfa_block_attention_is_parameter_free_and_gates_the_residual():
    """(h + x) * (sigmoid(h) - 0.5): with the convolutions zeroed except the identity branches,
    h is a known function of x, and the block's output must follow the formula."""
    from medsr_edge.models import PFABlock

    block = PFABlock(4).double().eval()
    for conv in (block.c1, block.c2, block.c3):
        for sub in (conv.conv3, conv.conv1, conv.squeeze):
            torch.nn.init.zeros_(sub.weight), torch.nn.init.zeros_(sub.bias)
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    silu = torch.nn.functional.silu
    h = silu(silu(x))  # c1 = identity, SiLU, c2 = identity, SiLU, c3 = identity
    assert torch.allclose(block(x), (h + x) * (torch.sigmoid(h) - 0.5))
    assert sum(p.numel() for p in block.parameters()) == 3 * sum(p.numel() for p in block.c1.parameters())


def test_pfa_student_starts_as_pixel_replication():
    net = build_model("student", scale=4).eval()
    x = torch.rand(1, 1, 7, 9)
    near = x.repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert torch.equal(net(x), near)


@pytest.mark.parametrize("scale", [2, 4])
def test_sinc_anchor_interpolates_a_band_limited_signal_on_the_bicubic_grid(scale):
    """The sinc student starts as its anchor: a fixed windowed-sinc interpolation. On a smooth
    cosine sampled at LR pixel centres it must give the cosine at the HR pixel centres (LR pixel j
    at HR s*j + (s-1)/2, sub-pixels in pixel-shuffle order) away from the replicated edges, and a
    flat image stays flat. A wrong phase, order or sign is off by far more than the tolerance."""
    import numpy as np

    net = build_model("student-sinc", scale=scale).double().eval()
    n = 64
    f = 0.11  # cycles per LR pixel, well below Nyquist (0.5)
    lr_y, lr_x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    signal = lambda y, x: 0.5 + 0.3 * np.cos(2 * np.pi * f * y + 0.7) * np.cos(2 * np.pi * 0.07 * x - 0.4)  # noqa: E731
    lr = torch.from_numpy(signal(lr_y, lr_x))[None, None]
    hr_coord = (np.arange(n * scale) - (scale - 1) / 2) / scale  # HR pixel centres in LR pixel units
    hy, hx = np.meshgrid(hr_coord, hr_coord, indexing="ij")
    want = signal(hy, hx)
    got = net(lr)[0, 0].detach().numpy()
    m = 12 * scale  # away from the edges, where the anchor replicates
    assert np.abs(got[m:-m, m:-m] - want[m:-m, m:-m]).max() < 5e-3
    nearest = lr.repeat_interleave(scale, 2).repeat_interleave(scale, 3)[0, 0].numpy()
    assert np.abs(nearest[m:-m, m:-m] - want[m:-m, m:-m]).max() > 5e-2  # the test tells them apart
    flat = torch.full((1, 1, 9, 11), 0.3, dtype=torch.float64)
    assert torch.allclose(net(flat), torch.full((1, 1, 9 * scale, 11 * scale), 0.3, dtype=torch.float64))


def test_sinc_student_takes_every_tensor_of_a_nearest_student():
    """The anchor is fixed and not stored, so a trained default student's weights fit the sinc
    student exactly (``train student --config student-sinc --body-from RUN``)."""
    a, b = build_model("student", scale=4), build_model("student-sinc", scale=4)
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(_perturb(a).state_dict(), strict=True)


def test_student_family_budgets():
    """Compute budgets of the student sizes, in convolution FLOPs per output pixel, against the
    first student (student-v1) and the esrgan-small teacher: fast <= 2x, default <= 3.5x and
    quality <= 6.9x student-v1 (the latency ceiling of issue 11), each >= 6x cheaper than the
    teacher and under 500k deploy parameters, and each size strictly bigger than the last."""
    flops = {}
    for name in ("student-v1", "student-fast", "student", "student-quality"):
        net = build_model(name, scale=4).reparameterize()
        assert count_params(net) <= 500_000
        flops[name] = gflops_per_output_mpx(net, 4)
    teacher = gflops_per_output_mpx(build_model("esrgan-small", scale=4), 4)
    v1 = flops.pop("student-v1")
    for name, ceiling in (("student-fast", 2.0), ("student", 3.5), ("student-quality", 6.9)):
        assert flops[name] <= ceiling * v1, f"{name}: {flops[name] / v1:.1f}x student-v1"
        assert teacher / flops[name] >= 6, f"{name} is only {teacher / flops[name]:.1f}x cheaper than the teacher"
    assert flops["student-fast"] < flops["student"] < flops["student-quality"]


def test_rrdbnet_canonical_full_config_and_shapes():
    full = build_model("esrgan-full", scale=4)
    assert 16.6e6 < count_params(full) < 16.8e6  # ESRGAN's 16.7 M parameters (single channel)
    tiny = build_model("esrgan-tiny", scale=2)
    assert tiny(torch.rand(1, 1, 10, 12)).shape == (1, 1, 20, 24)


def test_discriminator_map_and_features():
    d = build_model("discriminator-small")
    logits, feats = d(torch.rand(2, 1, 32, 32), return_features=True)
    assert logits.shape == (2, 1, 32, 32) and len(feats) == 4


def test_registry_rejects_unknown():
    with pytest.raises(KeyError, match="unknown model config"):
        build_model("nope")
    assert {"esrgan-full", "student"} <= set(CONFIGS)
    assert isinstance(build_model({"type": "RepSRNet", "num_feat": 4, "num_block": 1}), RepSRNet)
