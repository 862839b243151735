"""The vectorized core: P stacked members train exactly as P members trained one by one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchpbt.backends.vectorized import StackedModules, VectorAdam, VectorSGD, copy_member

P, STEPS, BATCH = 4, 15, 16


def mlp(i: int, norm: bool = False) -> nn.Module:
    torch.manual_seed(100 + i)
    layers = [nn.Linear(6, 12)] + ([nn.BatchNorm1d(12)] if norm else []) + [nn.Tanh(),
                                                                           nn.Linear(12, 3)]
    return nn.Sequential(*layers)


def batches() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(STEPS, P, BATCH, 6, generator=g), torch.randint(3, (STEPS, P, BATCH),
                                                                      generator=g)


HP = {"lr": [0.05, 0.1, 0.2, 0.01], "momentum": [0.0, 0.5, 0.9, 0.99],
      "weight_decay": [0.0, 1e-3, 1e-2, 0.1]}
ADAM = {"lr": [1e-3, 3e-3, 1e-2, 3e-2], "beta1": [0.9, 0.5, 0.0, 0.8],
        "beta2": [0.999, 0.99, 0.9, 0.95], "eps": [1e-8, 1e-6, 1e-8, 1e-4],
        "weight_decay": [0.0, 1e-2, 0.1, 1e-3]}


def one_by_one(make_opt, norm=False):
    x, y = batches()
    losses, states = [], []
    for i in range(P):
        model = mlp(i, norm)
        opt = make_opt(model, i)
        member = []
        for t in range(STEPS):
            loss = nn.functional.cross_entropy(model(x[t, i]), y[t, i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            member.append(loss.item())
        losses.append(member)
        states.append(model.state_dict())
    return torch.tensor(losses).T, states


def stacked(make_opt, norm=False):
    x, y = batches()
    stack = StackedModules.build(lambda i: mlp(i, norm), P)
    opt = make_opt(stack.params)
    losses = []
    for t in range(STEPS):
        out = stack(x[t])  # (P, batch, 3)
        per = nn.functional.cross_entropy(out.reshape(-1, 3), y[t].reshape(-1),
                                          reduction="none").view(P, BATCH).mean(1)
        opt.zero_grad()
        per.sum().backward()  # members share nothing: each gets its own loss's gradient
        opt.step()
        losses.append(per.detach())
    return torch.stack(losses), stack


def _check(ref, vec):
    (ref_losses, ref_states), (vec_losses, stack) = ref, vec
    torch.testing.assert_close(vec_losses, ref_losses, rtol=1e-4, atol=1e-5)
    for i in range(P):
        got = stack.member_state_dict(i)
        for k, v in ref_states[i].items():
            torch.testing.assert_close(got[k].to(v.dtype), v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("momentum", [HP["momentum"], [0.3, 0.5, 0.9, 0.99]],
                         ids=["one-without-momentum", "all-with-momentum"])
def test_sgd_members_match_torch_sgd_one_by_one(nesterov, momentum):
    hp = {**HP, "momentum": momentum}  # the two update paths: with and without a still member
    ref = one_by_one(lambda m, i: torch.optim.SGD(
        m.parameters(), lr=hp["lr"][i], momentum=hp["momentum"][i],
        weight_decay=hp["weight_decay"][i], nesterov=nesterov and hp["momentum"][i] > 0))
    # torch refuses nesterov with momentum 0; the vectorized rule is the same there
    vec = stacked(lambda p: VectorSGD(p, **hp, nesterov=nesterov))
    _check(ref, vec)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_and_adamw_members_match_torch_one_by_one(decoupled):
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref = one_by_one(lambda m, i: cls(m.parameters(), lr=ADAM["lr"][i],
                                      betas=(ADAM["beta1"][i], ADAM["beta2"][i]),
                                      eps=ADAM["eps"][i], weight_decay=ADAM["weight_decay"][i]))
    _check(ref, stacked(lambda p: VectorAdam(p, **ADAM, decoupled=decoupled)))


def test_batchnorm_running_statistics_are_kept_per_member():
    ref = one_by_one(lambda m, i: torch.optim.SGD(m.parameters(), lr=HP["lr"][i]), norm=True)
    _, stack = vec = stacked(lambda p: VectorSGD(p, lr=HP["lr"]), norm=True)
    _check(ref, vec)
    means = stack.buffers["1.running_mean"]
    assert not torch.allclose(means[0], means[1])  # each member's own statistics


def test_exploit_is_a_slice_copy_of_weights_buffers_and_optimizer_state():
    x, y = batches()
    stack = StackedModules.build(lambda i: mlp(i, norm=True), P)
    opt = VectorAdam(stack.params, lr=ADAM["lr"])
    for t in range(3):
        per = nn.functional.cross_entropy(stack(x[t]).reshape(-1, 3), y[t].reshape(-1),
                                          reduction="none").view(P, BATCH).mean(1)
        opt.zero_grad()
        per.sum().backward()
        opt.step()
    copy_member(stack, 0, 2, opt)
    for k, v in {**stack.params, **stack.buffers}.items():
        assert torch.equal(v[0], v[2]), k
    for st in opt.state.values():
        for v in st.values():
            assert torch.equal(v[0], v[2])
    opt.set_hparams(lr=[ADAM["lr"][2]] * P)  # same hparams, same batch: same next step
    xs = x[3].clone()
    xs[0] = xs[2]
    stack.eval()  # no batch statistics: members 0 and 2 see the same function
    out = stack(xs)
    torch.testing.assert_close(out[0], out[2])


def test_dropout_draws_different_masks_per_member():
    torch.manual_seed(0)
    stack = StackedModules([nn.Sequential(nn.Linear(4, 64), nn.Dropout(0.5))] * 2)
    out = stack(torch.ones(2, 8, 4))
    assert not torch.equal(out[0], out[1])  # same weights (one module twice), other masks


def test_bad_input_is_named():
    stack = StackedModules.build(mlp, P)
    with pytest.raises(ValueError, match=r"one batch per member: shape \(4, batch"):
        stack(torch.zeros(3, 2, 6))
    with pytest.raises(ValueError, match="give one value per member"):
        VectorSGD(stack.params, lr=[0.1, 0.2])
    with pytest.raises(KeyError, match=r"has no hparam\(s\) \['beta1'\]"):
        VectorSGD(stack.params, lr=0.1).set_hparams(beta1=0.9)
    with pytest.raises(ValueError, match="modules of one class"):
        StackedModules([nn.Linear(2, 2), nn.Conv1d(2, 2, 1)])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_the_fast_cross_entropy_equals_torchs_under_vmap(reduction, label_smoothing,
                                                         monkeypatch):
    from torch.func import vmap

    from torchpbt.backends.vectorized import fast_ops
    from torchpbt.backends.vectorized.fast_ops import FastOps

    calls = []
    real = fast_ops.cross_entropy
    monkeypatch.setattr(fast_ops, "cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k))

    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 3, generator=g)
    y = torch.randint(3, (4, 6), generator=g)
    y[0, 2] = -100  # ignored rows count as torch counts them

    def loss(a, b):
        return nn.functional.cross_entropy(a, b, reduction=reduction,
                                           label_smoothing=label_smoothing)

    ref = vmap(loss)(x, y)
    with FastOps():
        got = vmap(loss)(x, y)
    torch.testing.assert_close(got, ref)
    assert calls, "the stand-in was not used"
    calls.clear()
    weights = torch.rand(3, generator=g)  # a call it does not cover passes through unchanged
    with FastOps():
        out = nn.functional.cross_entropy(x[0], y[0], weight=weights, reduction=reduction)
    torch.testing.assert_close(out, nn.functional.cross_entropy(x[0], y[0], weight=weights,
                                                                reduction=reduction))
    assert not calls
