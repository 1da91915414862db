"""INT8-aware fine-tuning: the training-time simulation is the arithmetic INT8 export deploys, on
the convolutions export quantizes, and nothing changes outside training mode."""

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from conftest import phantom  # noqa: E402

from medsr_edge.core.degradation import degrade  # noqa: E402
from medsr_edge.distill.qat import Int8Grid, quantized_convolutions, simulate_int8  # noqa: E402
from medsr_edge.export.onnx_export import export_onnx  # noqa: E402
from medsr_edge.export.quantize import CalibrationSet, float_nodes, quantize_int8  # noqa: E402
from medsr_edge.models import build_model  # noqa: E402
from medsr_edge.models.checkpoint import save_model  # noqa: E402
from medsr_edge.models.student_arch import RepConv  # noqa: E402

CFG = {"name": "reppfa-test", "type": "RepPFANet", "num_feat": 8, "num_block": 3, "expand": 2, "scale": 4}


def _trained_like(seed: int = 0):
    torch.manual_seed(seed)
    net = build_model(CFG)
    for p in net.parameters():
        p.data += 0.05 * torch.randn_like(p)
    return net


def test_folded_kernel_is_differentiable_and_equals_the_fused_one():
    torch.manual_seed(0)
    conv = RepConv(6, 6)
    weight, bias = conv.folded()
    fused_w, fused_b = conv.fused_kernel()
    assert torch.equal(weight, fused_w) and torch.equal(bias, fused_b)
    (weight.square().sum() + bias.sum()).backward()
    for branch in (conv.conv3, conv.conv1, conv.expand, conv.squeeze):
        assert branch.weight.grad is not None and branch.weight.grad.abs().sum() > 0
    x = torch.randn(1, 6, 7, 9)
    assert torch.allclose(torch.nn.functional.conv2d(x, weight, bias, padding=1), conv(x), atol=1e-5)


def test_simulated_convolution_is_uint8_input_and_per_channel_int8_weight_arithmetic():
    net = _trained_like()
    simulate_int8(net, 0)
    conv = dict(net.named_modules())["body.1.c2"]
    conv.train()
    x = torch.randn(2, 8, 11, 13) * 0.7 + 0.2
    got = conv(x).detach().numpy()

    xn = x.numpy().astype(np.float64)
    low, high = min(0.0, xn.min()), max(0.0, xn.max())
    s = (high - low) / 255
    z = round(-low / s)
    xq = (np.clip(np.round(xn / s) + z, 0, 255) - z) * s
    w, b = (t.detach().numpy().astype(np.float64) for t in conv.folded())
    ws = np.abs(w).max(axis=(1, 2, 3), keepdims=True) / 127
    wq = np.clip(np.round(w / ws), -128, 127) * ws
    want = torch.nn.functional.conv2d(torch.from_numpy(xq), torch.from_numpy(wq), torch.from_numpy(b), padding=1).numpy()
    low, high = min(0.0, want.min()), max(0.0, want.max())  # the output is an 8-bit tensor too
    s = (high - low) / 255
    z = round(-low / s)
    want = (np.clip(np.round(want / s) + z, 0, 255) - z) * s
    assert np.abs(got - want).max() < 1e-4
    plain = torch.nn.functional.conv2d(x, *conv.folded(), padding=1).detach().numpy()
    assert np.abs(got - plain).max() > 1e-3  # the rounding is really applied
    (conv(x).sum()).backward()  # straight-through: the branches still learn
    assert conv.conv3.weight.grad.abs().sum() > 0


def test_simulation_leaves_evaluation_and_the_saved_weights_unchanged():
    net = _trained_like()
    reference = copy.deepcopy(net).eval()
    names = simulate_int8(net, 1).names
    x = torch.rand(1, 1, 12, 12)
    net.eval()
    assert torch.equal(net(x), reference(x))
    net.train()
    assert not torch.allclose(net(x), reference.train()(x), atol=1e-6)
    assert net.state_dict().keys() == reference.state_dict().keys()
    assert names == quantized_convolutions(build_model(CFG), 1)


def test_simulated_convolutions_are_the_ones_int8_export_quantizes(tmp_path):
    net = _trained_like()
    ckpt = save_model(tmp_path / "run" / "model.safetensors", net, CFG, {"scale": 4, "iterations": 1})
    fp32, _ = export_onnx(ckpt, tmp_path / "p.onnx")
    graph = onnx.load(str(fp32))
    hrs = [phantom(64, seed=s) for s in range(5)]
    calib = CalibrationSet([degrade(h, 4) for h in hrs[2:]], [degrade(h, 4) for h in hrs[:2]], hrs[:2], [])
    for extra in (0, 2):
        simulated = [f"/body.{name.removeprefix('body.').replace('.', '/')}/fused/Conv"
                     for name in quantized_convolutions(net, extra)]
        kept = set(float_nodes(graph, extra))
        assert [n.name for n in graph.graph.node if n.op_type == "Conv" and n.name not in kept] == simulated
        # and in the quantized graph exactly those convolutions read and write 8-bit tensors
        out, _ = quantize_int8(fp32, tmp_path / f"q{extra}.onnx", calib, float_convs=extra, max_gt_drop_db=5.0,
                               min_psnr_vs_fp32=0.0, max_local_diff=1.0)
        nodes = list(onnx.load(str(out)).graph.node)
        producer = {o: n.op_type for n in nodes for o in n.output}
        consumers = {}
        for n in nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n.op_type)
        eight_bit = [n.name for n in nodes if n.op_type == "Conv" and producer.get(n.input[0]) == "DequantizeLinear"
                     and consumers.get(n.output[0]) == ["QuantizeLinear"]]
        assert all(producer.get(n.input[0]) != "DequantizeLinear" for n in nodes  # the others compute in float
                   if n.op_type == "Conv" and n.name not in eight_bit)


def test_int8_check_compares_with_the_reference_fp32(tmp_path):
    """An INT8 model from a fine-tuned copy is judged against the FP32 model it ships beside."""
    paths = []
    for seed in (0, 1):
        ckpt = save_model(tmp_path / f"run{seed}" / "model.safetensors", _trained_like(seed), CFG,
                          {"scale": 4, "iterations": 1})
        paths.append(export_onnx(ckpt, tmp_path / f"m{seed}.onnx")[0])
    hrs = [phantom(64, seed=s) for s in range(6)]
    lrs = [degrade(h, 4) for h in hrs]
    calib = CalibrationSet(lrs[2:], lrs[:2], hrs[:2], [])
    _, own = quantize_int8(paths[0], tmp_path / "own.onnx", calib, max_gt_drop_db=5.0, min_psnr_vs_fp32=0.0, max_local_diff=1.0)
    _, vs_other = quantize_int8(paths[0], tmp_path / "ref.onnx", calib, max_gt_drop_db=5.0, min_psnr_vs_fp32=0.0, max_local_diff=1.0,
                                reference=paths[1])
    assert vs_other["reference_fp32"] == "m1.onnx" and own["reference_fp32"] is None
    assert vs_other["psnr_fp32_vs_gt_db"] != own["psnr_fp32_vs_gt_db"]
    assert vs_other["psnr_int8_vs_fp32_db"] < own["psnr_int8_vs_fp32_db"]  # another network's output


def test_int8_aware_needs_a_trained_student(phantom_dir, tmp_path):
    from medsr_edge.distill.options import TrainOptions
    from medsr_edge.distill.train import distill_student

    opts = TrainOptions(data=phantom_dir, out=tmp_path / "q", iters=1, batch=2, patch=32)
    with pytest.raises(ValueError, match="--init"):
        distill_student(opts, None, CFG, int8_aware=0)


def test_export_refuses_a_reference_for_float_formats_or_a_missing_one(tmp_path):
    from medsr_edge.core.errors import ModelError
    from medsr_edge.export.exporter import ExportOptions, export_model

    ckpt = save_model(tmp_path / "run" / "model.safetensors", _trained_like(), CFG, {"scale": 4, "iterations": 1})
    with pytest.raises(ModelError, match="only for INT8|is for INT8"):
        export_model(ckpt, "onnx", ExportOptions(output=tmp_path / "a.onnx", int8_reference=tmp_path / "x.onnx"))
    with pytest.raises(ModelError, match="not found"):
        export_model(ckpt, "onnx-int8", ExportOptions(output=tmp_path / "b.onnx", calib_data=tmp_path,
                                                      int8_reference=tmp_path / "missing.onnx"))
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


def test_learned_step_widens_a_grid_that_clips():
    """LSQ: a grid whose observed range is too narrow for the tensors it meets later learns a
    larger step (the gradient reaches the step size), and its error falls."""
    torch.manual_seed(0)
    grid = Int8Grid(observe=1)
    x = torch.randn(4096).abs()
    grid(0.25 * x)  # the observation batch saw a quarter of the range
    low, high = grid.value_range()
    clipped_error = (grid(x) - x).square().mean().item()
    opt = torch.optim.Adam(grid.parameters(), lr=0.02)
    for _ in range(150):
        loss = (grid(x) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert low == 0.0 and high == pytest.approx(0.25 * float(x.max()))
    assert grid.value_range()[1] > 2.5 * high
    assert (grid(x) - x).square().mean().item() < 0.01 * clipped_error


def test_int8_aware_run_records_its_ranges_and_export_quantizes_with_them(phantom_dir, tmp_path):
    from medsr_edge.core.errors import ModelError
    from medsr_edge.distill.options import TrainOptions
    from medsr_edge.distill.train import distill_student
    from medsr_edge.export.exporter import ExportOptions, export_model
    from medsr_edge.export.quantize import conv_module_name
    from medsr_edge.models.checkpoint import read_metadata

    init = save_model(tmp_path / "run" / "model.safetensors", _trained_like(), CFG, {"scale": 4, "iterations": 1})
    opts = TrainOptions(data=phantom_dir, out=tmp_path / "qat", iters=24, batch=2, patch=32, lr=1e-4, val_every=24)
    ckpt = distill_student(opts, None, CFG, init=init, pixel_loss="l2", int8_aware=1)
    ranges = read_metadata(ckpt)[1]["int8_aware"]["ranges"]
    assert sorted(ranges) == sorted(quantized_convolutions(build_model(CFG), 1))
    with pytest.raises(ModelError, match="--int8-float-convs 1"):
        export_model(ckpt, "onnx-int8", ExportOptions(output=tmp_path / "x.onnx", calib_data=phantom_dir, calib_split="val"))
    out = export_model(ckpt, "onnx-int8", ExportOptions(output=tmp_path / "q.onnx", calib_data=phantom_dir, calib_split="val",
                                                        int8_float_convs=1, max_gt_drop=5.0, min_psnr_vs_fp32=0.0,
                                                        max_local_diff=1.0), report=lambda s: None)
    graph = onnx.load(str(out)).graph
    init_values = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    quantize_by_input = {n.input[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    dequantized = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    checked = 0
    for conv in (n for n in graph.node if n.op_type == "Conv" and n.input[0] in dequantized):
        name = conv_module_name(conv.name)
        q_out = quantize_by_input[conv.output[0]]
        q_in = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.output[0] == dequantized[conv.input[0]])
        for side, q in (("input", q_in), ("output", q_out)):
            low, high = ranges[name][side]
            assert float(init_values[q.input[1]]) == pytest.approx((high - low) / 255, rel=1e-5)
            checked += 1
    assert checked == 2 * len(ranges)


def test_float_operations_read_float_tensors_in_the_int8_graph(tmp_path):
    """The residual Adds, the attention and the fusion's Concat read the float tensors; only the
    int8 convolutions read 8-bit ones (and a quantized convolution's own output)."""
    ckpt = save_model(tmp_path / "run" / "model.safetensors", _trained_like(), CFG, {"scale": 4, "iterations": 1})
    fp32, _ = export_onnx(ckpt, tmp_path / "p.onnx")
    hrs = [phantom(64, seed=s) for s in range(5)]
    calib = CalibrationSet([degrade(h, 4) for h in hrs[2:]], [degrade(h, 4) for h in hrs[:2]], hrs[:2], [])

    def float_readers_of_rounded_float_tensors(float_paths):
        out, report = quantize_int8(fp32, tmp_path / f"q{float_paths}.onnx", calib, float_convs=0, max_gt_drop_db=5.0,
                                    min_psnr_vs_fp32=0.0, max_local_diff=1.0, float_paths=float_paths)
        nodes = list(onnx.load(str(out)).graph.node)
        producer = {o: n for n in nodes for o in n.output}
        q_source = {n.output[0]: n.input[0] for n in nodes if n.op_type == "QuantizeLinear"}
        readers = []
        for dq in (n for n in nodes if n.op_type == "DequantizeLinear" and n.input[0] in q_source):
            made_by = producer.get(q_source[dq.input[0]])
            if made_by is not None and made_by.op_type == "Conv" and made_by.input[0] in producer \
                    and producer[made_by.input[0]].op_type == "DequantizeLinear":
                continue
            readers += [n.op_type for n in nodes if dq.output[0] in n.input and not (
                n.op_type == "Conv" and producer[n.input[1]].op_type == "DequantizeLinear")]
        return readers, report, sum(n.op_type == "QuantizeLinear" for n in nodes)

    rounded, _, quantizers = float_readers_of_rounded_float_tensors(False)
    assert "Add" in rounded  # what ONNX Runtime's quantizer does by itself
    kept, report, same_quantizers = float_readers_of_rounded_float_tensors(True)
    assert kept == [] and report["float_reads_restored"] == len(rounded)
    assert same_quantizers == quantizers  # the int8 convolutions are untouched
