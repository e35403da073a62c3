"""Every registered training method (and AEP with every registered weighting scheme) takes one optimiser step on
a tiny model: finite loss, something it trains moves, what it freezes stays put. A throw-away scheme and method,
registered here and removed afterwards, are picked up by the job with no other edit."""

from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aep_core.checkpoint import load_checkpoint
from aep_core.errors import ConfigError
from aep_core.models import EarlyExitNet, ExitOutputs, ModelSpec, build_model, get_backbone
from aep_core.training import (
    METHODS,
    SCHEMES,
    Method,
    MethodSettings,
    SchemeSpec,
    TrainConfig,
    build_method,
    get_method,
    losses,
    register_method,
    register_scheme,
    scheme_weights,
)
from aep_core.training.job import TrainJob, run_train_job
from aep_core.training.losses import ensemble_probs

torch.set_num_threads(1)
EPOCHS = 3  # one epoch per exit, so that layer-wise training reaches every exit


def tiny_model(method: type[Method], num_exits: int = 3) -> EarlyExitNet:
    torch.manual_seed(0)
    placement = list(range(num_exits - 1)) if method.uses_early_exits else []
    return build_model(
        ModelSpec(
            backbone_config=get_backbone("compact_cnn").tiny_config,
            in_channels=1,
            image_size=12,
            num_classes=4,
            head=method.head,
            placement=placement,
        )
    )


def state(model: EarlyExitNet, method: Method) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for m in (model, method) for k, v in m.state_dict().items()}


def one_step(model: EarlyExitNet, method: Method, epoch: int) -> tuple[torch.Tensor, set[str], set[str]]:
    """Prepare `epoch`, take one SGD step on random data as the loop does; returns the loss, the names of the
    entries that changed, and the names of the entries of modules whose parameters were all frozen."""
    g = torch.Generator().manual_seed(epoch)
    x, y = torch.randn(8, 1, 12, 12, generator=g), torch.randint(0, 4, (8,), generator=g)
    model.train()
    method.prepare_epoch(model, epoch)
    frozen = {
        f"{name}.{k}".lstrip(".")
        for name, m in model.named_modules()
        if list(m.parameters(recurse=False)) and not any(p.requires_grad for p in m.parameters(recurse=False))
        for k in m.state_dict(keep_vars=True)
        if "." not in k
    }
    opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = state(model, method)
    loss = method.loss(model(x, upto=method.last_exit(epoch)), y, epoch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    after = state(model, method)
    return loss.detach(), {k for k, v in after.items() if not torch.equal(v, before[k])}, frozen


CASES = [pytest.param(MethodSettings(name), id=name) for name in METHODS if name != "aep"]
CASES += [pytest.param(MethodSettings("aep", scheme), id=f"aep-{scheme}") for scheme in SCHEMES]


@pytest.mark.parametrize("settings", CASES)
def test_each_method_trains_one_step_and_leaves_frozen_parts_alone(settings):
    cls = get_method(settings.method)
    model = tiny_model(cls)
    method = build_method(settings, model, [0.3, 0.6, 1.0][-model.num_exits :], EPOCHS)
    assert isinstance(method, cls) and cls.help and model.head_kind == cls.head
    froze_something = False
    for epoch in range(EPOCHS):
        loss, changed, frozen = one_step(model, method, epoch)
        assert torch.isfinite(loss) and loss.ndim == 0
        trainable = {f"{n}" for n, p in model.named_parameters() if p.requires_grad}
        assert changed & trainable, f"epoch {epoch}: no trained parameter moved"
        assert not changed & frozen, f"epoch {epoch}: frozen entries moved: {sorted(changed & frozen)}"
        froze_something |= bool(frozen)
    # a method that decides what trains each epoch freezes something in some epoch
    assert froze_something == (type(method).prepare_epoch is not Method.prepare_epoch)
    weights = method.ensemble_weights()
    assert len(weights) == model.num_exits and abs(sum(weights) - 1) < 1e-6


@pytest.mark.parametrize("name", list(METHODS))
def test_settings_read_are_recorded_and_exist(name):
    settings = MethodSettings(name)
    relevant = settings.relevant()
    assert relevant["method"] == name
    assert set(relevant) - {"method"} == set(get_method(name).settings_read(settings))
    assert all(hasattr(settings, k) for k in relevant)


@pytest.mark.parametrize("name", [n for n, cls in METHODS.items() if cls.uses_early_exits])
def test_methods_with_early_exits_refuse_a_model_without_them(name):
    model = build_model(
        ModelSpec(
            backbone_config=get_backbone("compact_cnn").tiny_config,
            image_size=12,
            head=METHODS[name].head,
            placement=[],
        )
    )
    with pytest.raises(ConfigError, match="needs at least one early exit"):
        build_method(MethodSettings(name), model, [1.0], EPOCHS)


def test_bad_settings_give_clear_messages():
    with pytest.raises(ConfigError, match=r"Unknown training method 'boosting'\. Choose one of"):
        build_method(MethodSettings("boosting"), tiny_model(METHODS["aep"]), [0.3, 0.6, 1.0], EPOCHS)
    with pytest.raises(ConfigError, match="Unknown weighting scheme"):
        build_method(MethodSettings("aep", "quadratic"), tiny_model(METHODS["aep"]), [0.3, 0.6, 1.0], EPOCHS)
    with pytest.raises(ConfigError, match="EENet exit heads"):
        build_method(MethodSettings("eenet"), tiny_model(METHODS["aep"]), [0.3, 0.6, 1.0], EPOCHS)
    with pytest.raises(ConfigError, match="'v1' or 'v2'"):
        build_method(MethodSettings("eenet", eenet_loss="v3"), tiny_model(METHODS["eenet"]), [0.3, 0.6, 1.0], EPOCHS)
    with pytest.raises(ConfigError, match="lambda must be >= 0"):
        build_method(MethodSettings("eenet", lam=-1), tiny_model(METHODS["eenet"]), [0.3, 0.6, 1.0], EPOCHS)
    with pytest.raises(ConfigError, match="temperature > 0"):
        build_method(MethodSettings("distillation", alpha=2.0), tiny_model(METHODS["aep"]), [0.3, 0.6, 1.0], EPOCHS)
    with pytest.raises(ConfigError, match="at least one epoch"):
        build_method(MethodSettings("layer-wise"), tiny_model(METHODS["aep"]), [0.3, 0.6, 1.0], EPOCHS - 1)


def test_a_registered_scheme_and_method_are_picked_up_with_no_other_edit(tmp_path):
    with mock.patch.dict(SCHEMES), mock.patch.dict(METHODS):

        @register_scheme(SchemeSpec("reverse-linear", "Reverse linear", "w_i proportional to N + 1 - i"))
        def reverse_linear(num_exits, costs=None, base=2.0):
            w = torch.arange(num_exits, 0, -1, dtype=torch.float32)
            return w / w.sum()

        @register_method
        class FinalTwo(Method):
            name = "final-two"
            help = "cross-entropy of the last two exits only"

            def loss(self, out: ExitOutputs, y: torch.Tensor, epoch: int) -> torch.Tensor:
                return F.cross_entropy(out.logits[-1], y) + F.cross_entropy(out.logits[-2], y)

        assert list(SCHEMES)[-1] == "reverse-linear" and list(METHODS)[-1] == "final-two"
        torch.testing.assert_close(scheme_weights("reverse-linear", 4), torch.tensor([4.0, 3, 2, 1]) / 10)
        for settings in (MethodSettings("aep", "reverse-linear"), MethodSettings("final-two")):
            model = tiny_model(get_method(settings.method))
            loss, changed, _ = one_step(model, build_method(settings, model, [0.3, 0.6, 1.0], 1), 0)
            assert torch.isfinite(loss) and changed
        # the job the CLI and the app run: no edit anywhere else
        for settings in (MethodSettings("aep", "reverse-linear"), MethodSettings("final-two")):
            job = TrainJob(
                out=str(tmp_path / f"{settings.method}.pt"),
                dataset="fashion-mnist-slice",
                limit=64,
                model_config=get_backbone("compact_cnn").tiny_config,
                method=settings,
                train=TrainConfig(epochs=1, batch_size=32, threads=1, progress=False),
            )
            _, meta = load_checkpoint(run_train_job(job, log=lambda s: None))
            assert meta.training.method == settings.method
            weights = meta.training.ensemble_weights
            if settings.method == "aep":
                assert meta.training.settings["weighting"] == "reverse-linear"
                assert np.all(np.diff(weights) < 0)  # the registered prior: earlier exits weigh more
            else:
                np.testing.assert_allclose(weights, 1 / len(weights))
    assert "reverse-linear" not in SCHEMES and "final-two" not in METHODS


def test_hybrid_loss_is_the_linear_loss_plus_every_prefix_ensemble():
    model = tiny_model(get_method("aep"), num_exits=3)
    x, y = torch.randn(6, 1, 12, 12), torch.tensor([0, 1, 2, 3, 0, 1])
    out = model(x)
    linear = build_method(MethodSettings("aep", "linear"), model, [0.3, 0.6, 1.0], EPOCHS).loss(out, y, 0)
    hybrid = build_method(MethodSettings("aep", "hybrid"), model, [0.3, 0.6, 1.0], EPOCHS).loss(out, y, 0)
    prior = scheme_weights("linear", 3)
    prefix = sum(F.nll_loss(torch.log(ensemble_probs(out.logits, prior, k)), y) for k in range(3)) / 3
    torch.testing.assert_close(hybrid, linear + prefix)


def test_two_stage_eenet_trains_per_exit_losses_then_v1_as_the_authors_code():
    model = tiny_model(get_method("eenet"), num_exits=3)
    x, y = torch.randn(6, 1, 12, 12), torch.tensor([0, 1, 2, 3, 0, 1])
    out, rates = model(x), [0.3, 0.6, 1.0]
    method = build_method(MethodSettings("eenet", two_stage=True, lam=0.5), model, rates, 12)
    assert method.first_stage_epochs == 2 and method.version == "v1"
    assert MethodSettings("eenet", two_stage=True).relevant()["eenet_loss"] == "v1"
    assert MethodSettings("eenet").relevant()["eenet_loss"] == "v2"
    torch.testing.assert_close(method.loss(out, y, 1), losses.per_exit_loss(out.logits, y))
    v1 = losses.eenet_loss(out.logits, out.confidences, y, rates, 0.5, "v1")
    torch.testing.assert_close(method.loss(out, y, 2), v1)
    chosen = build_method(MethodSettings("eenet", eenet_loss="v2", two_stage=True, lam=0.5), model, rates, 12)
    v2 = losses.eenet_loss(out.logits, out.confidences, y, rates, 0.5, "v2")
    torch.testing.assert_close(chosen.loss(out, y, 2), v2)  # another loss stays an option
