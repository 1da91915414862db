"""Function-preserving widening (Net2WiderNet): the wide teacher starts as the trained student."""

import pytest
import torch

from medsr_edge.models import build_model
from medsr_edge.models.widen import widen


def _trained_like(cfg: dict, seed: int = 0):
    """A network with every weight random (the tail too, which starts at zero), as after training."""
    torch.manual_seed(seed)
    net = build_model(cfg).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


@pytest.mark.parametrize("anchor", ["nearest", "sinc"])
def test_widening_keeps_the_function(anchor):
    narrow = _trained_like({"type": "RepPFANet", "num_feat": 8, "num_block": 2, "expand": 2, "scale": 4, "anchor": anchor})
    wide = build_model({"type": "RepPFANet", "num_feat": 24, "num_block": 2, "expand": 2, "scale": 4, "anchor": anchor}).eval()
    x = torch.rand(2, 1, 24, 20)
    with torch.no_grad():
        before, after = narrow(x), widen(narrow, wide)(x)
        assert (before - after).abs().max() < 1e-5
        assert (before - wide.reparameterize()(x)).abs().max() < 1e-5  # and it still folds for deployment
    noisy = widen(narrow, build_model({"type": "RepPFANet", "num_feat": 32, "num_block": 2, "expand": 2, "scale": 4,
                                       "anchor": anchor}).eval(), noise=1e-3)
    with torch.no_grad():
        diff = (before - noisy(x)).abs().max()
    assert 0 < diff < 0.02  # the copies differ a little, so training can move them apart


def test_widening_refuses_what_it_cannot_keep():
    narrow = build_model({"type": "RepPFANet", "num_feat": 8, "num_block": 2, "expand": 2, "scale": 4})
    # not a multiple; another depth; a width (16 = 4^2) whose tail has an identity branch the source lacks
    for cfg in ({"num_feat": 12, "num_block": 2}, {"num_feat": 32, "num_block": 3}, {"num_feat": 16, "num_block": 2}):
        with pytest.raises(ValueError, match="cannot widen"):
            widen(narrow, build_model({"type": "RepPFANet", "expand": 2, "scale": 4, **cfg}))


def test_train_widen_from_starts_at_the_source(tmp_path, phantom_dir):
    from typer.testing import CliRunner

    from medsr_edge.cli.main import app
    from medsr_edge.models.checkpoint import read_metadata

    runner = CliRunner()
    common = ["--data", str(phantom_dir), "--batch", "2", "--patch", "32", "--val-every", "2", "--threads", "1"]
    assert runner.invoke(app, ["train", "student", "--config", "student-fast", "--out", str(tmp_path / "s"),
                               "--iters", "2", *common]).exit_code == 0
    res = runner.invoke(app, ["train", "student", "--config", "teacher-wide", "--out", str(tmp_path / "t"),
                              "--widen-from", str(tmp_path / "s"), "--iters", "1", "--lr", "0", *common])
    assert res.exit_code != 0 and "cannot widen" in res.output  # 2 blocks into 4: a one-line error
    wide = tmp_path / "wide.toml"
    wide.write_text(f'arch = "student-fast"\nwiden_from = "{tmp_path / "s"}"\n')
    res = runner.invoke(app, ["train", "student", "--config", str(wide), "--out", str(tmp_path / "w"), "--iters", "1",
                              "--lr", "0", *common])
    assert res.exit_code == 0, res.output
    assert read_metadata(tmp_path / "w")[1]["widen_from"]["from"] == str(tmp_path / "s")


def test_train_student_with_a_teacher_distils(tmp_path, phantom_dir):
    """`train student --teacher T`: the same command and recipe, plus the loss to T's output."""
    from typer.testing import CliRunner

    from medsr_edge.cli.main import app
    from medsr_edge.models.checkpoint import read_metadata

    runner = CliRunner()
    common = ["--data", str(phantom_dir), "--batch", "2", "--patch", "32", "--val-every", "2", "--threads", "1",
              "--loss", "l2", "--intensity-aug", "0.5"]
    assert runner.invoke(app, ["train", "student", "--config", "student-fast", "--out", str(tmp_path / "t"),
                               "--iters", "2", *common]).exit_code == 0
    res = runner.invoke(app, ["train", "student", "--config", "student-tiny", "--out", str(tmp_path / "s"),
                              "--teacher", str(tmp_path / "t"), "--teacher-weight", "0.5", "--iters", "2", *common])
    assert res.exit_code == 0, res.output
    meta = read_metadata(tmp_path / "s")[1]
    assert meta["teacher"] == str(tmp_path / "t") and meta["losses"] == {"l2_gt": 1.0, "l2_teacher": 0.5}
    assert "loss_kd" in (tmp_path / "s" / "log.csv").read_text().splitlines()[0]
