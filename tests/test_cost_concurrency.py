"""MACs counting is private to the thread that counts: saliency (a backward pass) and training steps in other
threads neither break nor change the count, however they interleave; and it counts what PyTorch's own
FlopCounterMode counts, for every registered backbone."""

import threading

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from aep_core.analysis.saliency import exit_saliency
from aep_core.cost import count_macs, exit_costs
from aep_core.models import ModelSpec, build_model
from aep_core.models.registry import BACKBONES

ROUNDS = 40


def _run_together(*jobs) -> list[BaseException]:
    """Run each job ROUNDS times in its own thread, all at once; the exceptions they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def loop(job) -> None:
        start.wait()
        try:
            for _ in range(ROUNDS):
                job()
        except BaseException as e:  # collected and asserted on in the main thread
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_saliency_and_cost_counting_run_concurrently():
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone_config={"widths": (4, 8, 8)})).eval()
    other = build_model(ModelSpec(backbone_config={"widths": (4, 8, 8)})).eval()
    x = torch.randn(1, 1, 28, 28)
    expected = exit_costs(other, (1, 28, 28)).to_dict()
    counts: list[dict] = []
    errors = _run_together(
        lambda: exit_saliency(model, x, "saliency"),
        lambda: counts.append(exit_costs(other, (1, 28, 28)).to_dict()),
    )
    assert not errors, errors[0]
    assert counts and all(c == expected for c in counts)


def test_training_steps_are_neither_broken_nor_counted_by_another_threads_count():
    torch.manual_seed(0)
    trained = build_model(ModelSpec(backbone_config={"widths": (4, 8, 8)}))
    counted = build_model(ModelSpec(backbone_config={"widths": (4, 8, 8)})).eval()
    optimiser = torch.optim.SGD(trained.parameters(), lr=0.01)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    alone = count_macs(counted, torch.zeros(1, 1, 28, 28))

    def step() -> None:
        loss = sum(torch.nn.functional.cross_entropy(z, y) for z in trained(x).logits)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    counts: list[int] = []
    errors = _run_together(step, lambda: counts.append(count_macs(counted, torch.zeros(1, 1, 28, 28))))
    assert not errors, errors[0]
    assert counts == [alone] * ROUNDS


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_count_equals_pytorchs_flop_counter(backbone):
    model = build_model(ModelSpec(backbone=backbone, in_channels=3, image_size=32)).eval()
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad(), FlopCounterMode(display=False) as reference:
        model(x)
    assert count_macs(model, x) == reference.get_total_flops() // 2 > 0
