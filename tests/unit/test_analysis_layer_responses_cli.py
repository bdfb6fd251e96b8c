"""`dtrain analyze layer-responses` on a trainer-format checkpoint and a fresh registry net."""

import json

import torch
from click.testing import CliRunner
from prepared_data import write_prepared

from dtrain import models
from dtrain.analysis.model_source import from_checkpoint
from dtrain.config import to_dict
from dtrain.resolve import load_config


def write_checkpoint(path, data_root):
    """What the trainer saves (dtrain.engine.state.build_state): weights under 'model', the
    resolved config under 'config' (a dict), the step."""
    config = load_config("digits_resnet20", ["model.num_classes=3", f"data.root={data_root}"])
    torch.manual_seed(0)
    net = models.build("resnet20", num_classes=3)
    for m in net.modules():  # as if trained: BN statistics away from their initial values
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.1, 0.5)
            m.running_var.fill_(4.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "config": to_dict(config),
                "step": 40}, path)
    return net


def test_checkpoint_round_trip_keeps_weights(tmp_path):
    net = write_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt-000000040.pt", tmp_path)
    loaded = from_checkpoint(tmp_path / "run")  # a run dir: its newest checkpoint
    assert loaded.label == "resnet20 (iter 40)"
    for (name, a), b in zip(net.state_dict().items(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_layer_responses_command_writes_figure_and_numbers(tmp_path):
    from dtrain.commands.analyze import analyze

    data = write_prepared(tmp_path / "data", counts={"train": 4, "val": 7})
    write_checkpoint(tmp_path / "ckpt.pt", data)
    out = tmp_path / "fig" / "responses"
    result = CliRunner().invoke(analyze, ["layer-responses", str(tmp_path / "ckpt.pt"), "--model", "plain20",
                                          "--batch-size", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in out.with_suffix(".svg").read_text()
    records = json.loads(out.with_suffix(".json").read_text())
    assert list(records) == ["resnet20 (iter 40)", "plain20 (He init)"]
    for record in records.values():
        layers = record["layers"]
        assert len(layers) == 19  # 6n+1 3x3 convs of a 20-layer CIFAR net (the 20th layer is the FC)
        assert all(layer["samples"] == 7 for layer in layers)  # every val image, padding left out
        assert layers[1]["module"] == "layer1.0.bn1" and layers[2]["module"] == "layer1.0.bn2"
    # "Trained" BN (gamma in [0.1, 0.5]) gives responses with a per-channel std below 0.5.
    assert all(layer["channel_std"] < 0.5 for layer in records["resnet20 (iter 40)"]["layers"][1:])


def test_no_model_is_a_usage_error():
    from dtrain.commands.analyze import analyze

    result = CliRunner().invoke(analyze, ["layer-responses"])
    assert result.exit_code == 2 and "at least one CHECKPOINT or --model" in result.output
