"""policy.divergence: the verdict by hand, and snapshot/restore of weights and optimizer state."""

import math

import torch

from prmloop.policy.divergence import NON_FINITE, TOO_LARGE, change_norm, norm, restore, snapshot, verdict


def test_verdict_by_hand():
    assert verdict(10.0, 4.9, 0.5) is None  # 0.49 of the norm
    assert verdict(10.0, 5.1, 0.5) == TOO_LARGE
    assert verdict(10.0, 1e6, 0.0) is None  # 0 = only NaN/inf
    assert verdict(10.0, math.inf, 0.0) == NON_FINITE
    assert verdict(math.nan, 0.0, 0.5) == NON_FINITE
    assert verdict(0.0, 0.4, 0.5) is None and verdict(0.0, 0.6, 0.5) == TOO_LARGE  # from zero: against 1


def test_norm_by_hand():
    assert norm([torch.tensor([3.0]), torch.tensor([[4.0]])]) == 5.0
    assert math.isnan(norm([torch.tensor([1.0, math.inf])]))


def test_snapshot_restore_undoes_an_adam_step():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    params = list(layer.parameters())
    layer(torch.ones(1, 3)).sum().backward()
    fresh = snapshot(params, optimizer.state)  # before the first step: no optimizer state yet
    assert all(state is None for _, state in fresh)
    optimizer.step()
    restore(params, optimizer.state, fresh)
    assert not optimizer.state and all(torch.equal(p, w) for p, (w, _) in zip(params, fresh))
    optimizer.step()
    saved = snapshot(params, optimizer.state)
    expected = {key: value.clone() for key, value in optimizer.state[params[0]].items()}
    optimizer.step()
    assert change_norm(params, saved) > 0
    restore(params, optimizer.state, saved)
    assert change_norm(params, saved) == 0
    assert all(torch.equal(optimizer.state[params[0]][key], value) for key, value in expected.items())
