"""`train student --config configs/NAME.toml`: an experiment as a file, flags win over its keys."""

from pathlib import Path

from typer.testing import CliRunner

from medsr_edge.cli.main import app
from medsr_edge.models.checkpoint import read_metadata

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_an_experiment_file_trains_and_flags_override_it(tmp_path, phantom_dir):
    exp = tmp_path / "tiny.toml"
    exp.write_text(f'arch = "student-tiny"\ndata = "{phantom_dir}"\nout = "{tmp_path / "run"}"\niters = 5\nbatch = 2\n'
                   f'patch = 32\nval_every = 2\nthreads = 1\nexclude_source = ["ct/synthetic"]\nbalance = "modality"\n'
                   'lossy_downscale = 2\n')
    res = runner.invoke(app, ["train", "student", "--config", str(exp), "--iters", "2"])
    assert res.exit_code == 0, res.output
    config, meta = read_metadata(tmp_path / "run")
    assert config["name"] == "student-tiny" and meta["iterations"] == 2  # the flag won over iters = 5
    assert meta["exclude_sources"] == ["ct/synthetic"] and meta["balance"] == "modality"
    assert meta["lossy_downscale"] == 2  # recorded, so a model card says how its ground truth was made
    assert set(meta["train_sources"]) == {"mri/synthetic"}


def test_unknown_keys_are_refused_with_a_one_line_error(tmp_path):
    exp = tmp_path / "bad.toml"
    exp.write_text('arch = "student"\nlearning_rate = 1\n')
    res = runner.invoke(app, ["train", "student", "--config", str(exp)])
    assert res.exit_code == 2 and "unknown keys learning_rate" in res.output


def test_the_shipped_experiment_files_use_known_keys():
    import inspect

    import tomllib

    from medsr_edge.cli.main import train_student_cmd

    known = set(inspect.signature(train_student_cmd).parameters) | {"arch", "about"}
    for f in CONFIGS.glob("student-*.toml"):
        assert set(tomllib.loads(f.read_text())) <= known, f.name
