import copy

import pytest

torch = pytest.importorskip("torch")

from medsr_edge.models import (CONFIGS, RepConv, RepSRNet, build_model, count_params,  # noqa: E402
                               gflops_per_output_mpx)


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
def test_student_reparameterized_equals_training_form(scale):
    net = _perturb(build_model("student", scale=scale)).eval()
    x = torch.rand(1, 1, 21, 30)
    ref = net(x)
    deploy = copy.deepcopy(net).reparameterize()
    assert deploy.is_deploy
    out = deploy(x)
    assert out.shape == (1, 1, 21 * scale, 30 * scale)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


def test_student_budget_against_shipped_teacher_config():
    student = build_model("student", scale=4).reparameterize()
    teacher = build_model("esrgan-small", scale=4)
    assert count_params(student) <= 500_000
    ratio = gflops_per_output_mpx(teacher, 4) / gflops_per_output_mpx(student, 4)
    assert ratio >= 30, f"student is only {ratio:.1f}x cheaper than the teacher"


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
