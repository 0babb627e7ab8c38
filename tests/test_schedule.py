"""The optimiser set-up of the training loop: weight-decay groups and the LR schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from adaptok.models import EncoderConfig, ModelConfig, build_model
from adaptok.train.loop import parameter_groups, warmup_cosine


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
