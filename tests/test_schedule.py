"""The optimiser set-up of the training loop: weight-decay groups and the LR schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from adaptok.models import EncoderConfig, ModelConfig, build_model
from adaptok.train.optim import parameter_groups, warmup_cosine


@pytest.mark.parametrize("method", ["grid", "dht"])
def test_every_trainable_parameter_is_in_exactly_one_group(method: str) -> None:
    encoder = EncoderConfig(embed_dim=32, depth=1, num_heads=2)
    options = {"weights": "none"} if method == "dht" else {}
    model = build_model(
        ModelConfig(
            method=method, image_size=16, patch_size=8, encoder=encoder, partition_options=options
        )
    )
    model.tokenizer.requires_grad_(True)
    next(model.encoder.parameters()).requires_grad_(False)  # a frozen one is left out
    decay, no_decay = parameter_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    grouped = [id(p) for p in decay["params"] + no_decay["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)
    names = {id(p): n for n, p in model.named_parameters()}
    for parameter in decay["params"]:
        assert parameter.ndim >= 2, names[id(parameter)]
    undecayed = {names[id(p)] for p in no_decay["params"]}
    # Biases, norms, prefix tokens and position tables are never decayed.
    assert any(n.endswith(".bias") for n in undecayed)
    assert any("prefix" in n for n in undecayed)
    if method == "dht":
        assert any(n.endswith("background") for n in undecayed)
    # Every matrix of the trunk is decayed.
    assert any(names[id(p)].endswith("qkv.weight") for p in decay["params"])


def test_weight_decay_follows_the_modules_declarations_not_names() -> None:
    """no_weight_decay() (timm's convention) decides, at any depth; names do not."""

    class Part(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(4, 3))  # declared below
            self.pos_weight = torch.nn.Parameter(torch.zeros(4, 3))  # "pos" in its name

        def no_weight_decay(self) -> set[str]:
            return {"table"}

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Sequential(Part()))
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} == {"0.bias", "1.0.table"}
    assert {names[id(p)] for p in decay["params"]} == {"0.weight", "1.0.pos_weight"}


@pytest.mark.parametrize("position", ["learned", "sincos"])
def test_adaptive_vit_declares_its_tokens_and_positions(position: str) -> None:
    encoder = EncoderConfig(embed_dim=32, depth=1, num_heads=2)
    grid = build_model(ModelConfig(image_size=16, patch_size=8, encoder=encoder, position=position))
    expected = {"embedder.prefix_tokens"} | (
        {"embedder.pos_embed"} if position == "learned" else set()
    )
    assert grid.no_weight_decay() == expected
    dht = build_model(
        ModelConfig(
            method="dht", image_size=16, patch_size=8, encoder=encoder,
            partition_options={"weights": "none"},
        )
    )  # fmt: skip
    assert dht.no_weight_decay() == {
        "embedder.mix_logit", "embedder.background", "embedder.prefix", "embedder.prefix_position"
    }  # fmt: skip
    parameters = dict(dht.named_parameters())
    assert all(name in parameters for name in dht.no_weight_decay())


def test_warmup_then_cosine_to_zero() -> None:
    factor = warmup_cosine(warmup=4, total=20)
    assert [factor(step) for step in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    assert factor(12) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factor(20) == pytest.approx(0.0, abs=1e-12)
    assert factor(40) == pytest.approx(0.0, abs=1e-12)  # stays at zero after the end
    values = [factor(step) for step in range(4, 21)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_schedule_drives_a_torch_scheduler() -> None:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=2.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(2, 10))
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [1.0, 2.0, 2.0]
