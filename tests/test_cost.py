"""Cost counts against a hand-computed small conv net."""

import pytest
import torch
from torch import nn

from aep_core.cost import count_macs, count_params, cumulative_block_macs, exit_costs
from aep_core.models import ModelSpec, build_model


def test_conv_and_linear_macs_by_hand():
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)  # 2 out ch * 9 taps * 16 positions = 288
    assert count_macs(conv, torch.zeros(1, 1, 4, 4)) == 288
    fc = nn.Linear(8, 3)
    assert count_macs(fc, torch.zeros(1, 8)) == 24
    assert count_params(conv, fc) == 18 + 27


def test_exit_costs_of_tiny_compact_cnn_by_hand():
    # widths (2, 4), one conv per stage, 1x8x8 input, 3 classes, exits after every block.
    spec = ModelSpec(
        backbone_config={"widths": [2, 4], "convs_per_stage": 1}, image_size=8, num_classes=3, placement="blocks"
    )
    model = build_model(spec)
    # stem: conv 1->2 at 8x8: 2*9*64 = 1152. blocks: [maxpool + conv 2->4 at 4x4: 4*2*9*16 = 1152]
    assert cumulative_block_macs(model.backbone, (1, 8, 8)) == [2304]
    report = exit_costs(model, (1, 8, 8))
    assert len(report.exits) == 1
    head = 4 * 3  # linear 4 -> 3
    assert report.exits[0].head_macs == head
    assert report.full_macs == 2304 + head
    stem_params = 2 * 9 + 2 * 2  # conv + BN weight/bias
    block_params = 4 * 2 * 9 + 2 * 4
    assert report.full_params == stem_params + block_params + head + 3


def test_cumulative_cost_includes_every_head_on_the_way():
    model = build_model(ModelSpec(backbone_config={"widths": [4, 8, 16]}, placement="blocks"))
    r = exit_costs(model, (1, 28, 28))
    running = 0
    for e in r.exits:
        running += e.segment_macs + e.head_macs
        assert e.cum_macs == running
    assert r.exits[-1].cum_macs > r.full_macs  # early heads cost something
    assert r.full_macs == sum(e.segment_macs for e in r.exits) + r.exits[-1].head_macs
    assert r.with_exits_params == count_params(model)


def test_macs_split_separates_the_network_from_the_early_heads():
    model = build_model(ModelSpec(backbone_config={"widths": [4, 8, 16]}, placement="blocks"))
    r = exit_costs(model, (1, 28, 28))
    network, heads = r.macs_split()
    for k, e in enumerate(r.exits):
        assert network[k] + heads[k] == pytest.approx(e.macs_fraction)
    assert network[-1] == pytest.approx(1.0)  # at the last exit the network's own layers are the whole network
    early_heads = sum(e.head_macs for e in r.exits[:-1])
    assert heads[-1] == pytest.approx(early_heads / r.full_macs) and heads[-1] > 0
    assert heads[0] == pytest.approx(r.exits[0].head_macs / r.full_macs)
    assert network == sorted(network) and heads == sorted(heads)
