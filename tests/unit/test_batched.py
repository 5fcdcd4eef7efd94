"""optlab.batched: each batched rule equals torch.optim member by member (parameters after every
step, state_dict after export), including frozen members, resuming, and schedulers."""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from optlab.optim import QuickProp
from optlab.training.batched import SUPPORTED, BatchedOptimizer, unsupported

K, STEPS = 3, 20

# three members per class, each with its own hyperparameters (member 2's biases also get their
# own lr, so lr differs across groups). Biases are always exempt from weight decay.
SETTINGS = {
    torch.optim.SGD: [
        dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
        dict(lr=0.05, momentum=0.0, dampening=0.3, weight_decay=5e-3),
        dict(lr=0.2, momentum=0.5, dampening=0.1),
    ],
    torch.optim.Adam: [
        dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
        dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6),
        dict(lr=2e-2, betas=(0.5, 0.9), eps=1e-4, weight_decay=0.1),
    ],
    torch.optim.AdamW: [
        dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
        dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.0),
        dict(lr=2e-2, betas=(0.5, 0.9), eps=1e-4, weight_decay=0.5),
    ],
    torch.optim.RMSprop: [
        dict(lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.9, centered=True, weight_decay=1e-2),
        dict(lr=3e-3, alpha=0.9, eps=1e-6),
        dict(lr=1e-3, alpha=0.8, momentum=0.5, weight_decay=0.1),
    ],
    torch.optim.Adagrad: [
        dict(lr=0.1, lr_decay=0.01, weight_decay=1e-2, initial_accumulator_value=0.1),
        dict(lr=0.05, eps=1e-6),
        dict(lr=0.2, lr_decay=0.1, initial_accumulator_value=0.5, weight_decay=0.05),
    ],
    torch.optim.Adamax: [
        dict(lr=2e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
        dict(lr=5e-3, betas=(0.8, 0.99), eps=1e-6),
        dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-4, weight_decay=0.1),
    ],
    torch.optim.Adadelta: [
        dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=1e-2),
        dict(lr=0.5, rho=0.95, eps=1e-5),
        dict(lr=2.0, rho=0.8, eps=1e-4, weight_decay=0.1),
    ],
    torch.optim.Rprop: [
        dict(lr=1e-2),
        dict(lr=5e-3, etas=(0.3, 1.5), step_sizes=(1e-4, 0.02)),
        dict(lr=2e-2, etas=(0.6, 1.1), step_sizes=(1e-3, 5.0)),
    ],
    torch.optim.RAdam: [
        dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
        dict(lr=3e-3, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, decoupled_weight_decay=True),
        dict(lr=2e-2, betas=(0.5, 0.8), eps=1e-4),
    ],
    torch.optim.NAdam: [
        dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, momentum_decay=4e-3),
        dict(lr=3e-3, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1, decoupled_weight_decay=True),
        dict(lr=1e-2, betas=(0.5, 0.8), eps=1e-4, momentum_decay=1e-2),
    ],
    QuickProp: [
        dict(lr=1e-2, mu=1.75, decay=1e-4),
        dict(lr=5e-3, mu=1.5),
        dict(lr=2e-2, mu=2.0, decay=1e-2),
    ],
}
CLASSES = pytest.mark.parametrize("cls", SUPPORTED, ids=lambda c: c.__name__)


def tiny() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


def groups(model: nn.Module, k: int, lr: float) -> list[dict]:
    """[decayed weights, exempt biases]; member 2's biases at half its lr."""
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    exempt = {"params": biases, "weight_decay": 0.0} | ({"lr": lr / 2} if k == 2 else {})
    return [{"params": weights}, exempt]


class Setup:
    """K solo (reference) optimizers over K models, and the batched copy of the same K models."""

    def __init__(self, classes, settings, seed=0):
        torch.manual_seed(seed)
        self.solo_models = [tiny() for _ in range(K)]
        self.models = copy.deepcopy(self.solo_models)
        self.solo, self.members = (
            [c(groups(m, k, s["lr"]), **s) for k, (c, m, s) in enumerate(zip(classes, models, settings))]
            for models in (self.solo_models, self.models))
        self.params = [list(m.parameters()) for m in self.models]
        self.flat = torch.stack([parameters_to_vector(p) for p in self.params]).requires_grad_()
        self.batched = BatchedOptimizer(self.flat, self.members, self.params)
        self.n = self.flat.shape[1]

    def step(self, active=None, grads=None):
        """Feed both the same gradients; step the active solo optimizers and the batched one."""
        grads = torch.randn(K, self.n) if grads is None else grads
        self.flat.grad = grads.clone()
        for k, model in enumerate(self.solo_models):
            offset = 0
            for p in model.parameters():
                p.grad = grads[k, offset : offset + p.numel()].view_as(p).clone()
                offset += p.numel()
            if active is None or active[k]:
                self.solo[k].step()
        self.batched.step(None if active is None else torch.tensor(active))

    def check_params(self):
        for k, model in enumerate(self.solo_models):
            expected = parameters_to_vector(model.parameters()).detach()
            torch.testing.assert_close(self.flat[k].detach(), expected, **TOLERANCE[expected.device.type])

    def check_state(self):
        self.batched.export()
        for member, solo in zip(self.members, self.solo):
            assert_same(member.state_dict(), solo.state_dict())


# on CPU the batched rules are torch.optim's single-tensor arithmetic, to the bit; on CUDA torch
# takes its foreach path, which rounds differently
TOLERANCE = {"cpu": {"rtol": 0, "atol": 0}, "cuda": {"rtol": 1e-5, "atol": 1e-6}}


def assert_same(a, b, where="state_dict"):
    """Same structure, keys, dtypes and shapes; tensor values equal on CPU (TOLERANCE)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: {sorted(map(str, a))} != {sorted(map(str, b))}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device), where
        torch.testing.assert_close(a, b, msg=where, **TOLERANCE[a.device.type])
    else:
        assert a == b, where


@CLASSES
def test_matches_torch_step_by_step(cls):
    s = Setup([cls] * K, SETTINGS[cls])
    s.check_state()  # before any step (Adagrad already holds state)
    for i in range(STEPS):
        s.step()
        s.check_params()
        if i == 0:
            built = s.batched.h
        assert s.batched.h is built  # unchanged hyperparameters: no new device tensors
        if i in (0, STEPS - 1):
            s.check_state()


def test_adam_and_adamw_members_share_one_batch():
    settings = [SETTINGS[torch.optim.Adam][0], SETTINGS[torch.optim.AdamW][2], SETTINGS[torch.optim.Adam][2]]
    s = Setup([torch.optim.Adam, torch.optim.AdamW, torch.optim.Adam], settings)
    for _ in range(10):
        s.step()
        s.check_params()
    s.check_state()


def test_sgd_momentum_by_hand():
    """One scalar, two members: heavy ball (lr 0.1, μ 0.9) and Nesterov (lr 0.1, μ 0.5), from
    θ = 1 with gradients 1 then 2.
    heavy ball: b = 1, θ = 1 − 0.1·1 = 0.9;  b = 0.9·1 + 2 = 2.9, θ = 0.9 − 0.29 = 0.61
    Nesterov:   b = 1, d = 1 + 0.5·1 = 1.5, θ = 0.85;  b = 0.5 + 2 = 2.5, d = 2 + 1.25 = 3.25, θ = 0.525"""
    params = [[nn.Parameter(torch.ones(1))] for _ in range(2)]
    members = [torch.optim.SGD(params[0], lr=0.1, momentum=0.9),
               torch.optim.SGD(params[1], lr=0.1, momentum=0.5, nesterov=True)]
    flat = torch.ones(2, 1, requires_grad=True)
    batched = BatchedOptimizer(flat, members, params)
    for g in (1.0, 2.0):
        flat.grad = torch.full((2, 1), g)
        batched.step()
    torch.testing.assert_close(flat.detach(), torch.tensor([[0.61], [0.525]]))
    batched.export()
    torch.testing.assert_close(members[0].state[params[0][0]]["momentum_buffer"], torch.tensor([2.9]))
    torch.testing.assert_close(members[1].state[params[1][0]]["momentum_buffer"], torch.tensor([2.5]))


@CLASSES
def test_inactive_member_is_left_unchanged(cls):
    """Member 1 is frozen for steps 4-9: its rows of flat and of every buffer stay bitwise equal
    while the others follow torch; thawed, it goes on like a solo optimizer that skipped them."""
    s = Setup([cls] * K, SETTINGS[cls])
    for _ in range(3):
        s.step()
    frozen = (s.flat[1].clone(), {name: b[1].clone() for name, b in s.batched.state.items()})
    for _ in range(6):
        s.step(active=[True, False, True])
        s.check_params()
        assert torch.equal(s.flat[1], frozen[0])
        for name, buffer in s.batched.state.items():
            assert torch.equal(buffer[1], frozen[1][name]), name
    s.check_state()
    for _ in range(4):
        s.step()
        s.check_params()
    s.check_state()


@CLASSES
def test_load_resumes_like_torch(cls):
    """A resumed run: fresh member optimizers load the solo checkpoints, and `load` continues
    exactly where the solo optimizers go on."""
    s = Setup([cls] * K, SETTINGS[cls])
    for _ in range(7):  # only the solo side runs ahead
        s.step()
    settings = SETTINGS[cls]
    models = copy.deepcopy(s.solo_models)
    members = [cls(groups(m, k, st["lr"]), **st) for k, (m, st) in enumerate(zip(models, settings))]
    params = [list(m.parameters()) for m in models]
    flat = torch.stack([parameters_to_vector(p) for p in params]).requires_grad_()
    batched = BatchedOptimizer(flat, members, params)
    for member, solo in zip(members, s.solo):
        member.load_state_dict(solo.state_dict())
    batched.load()
    s.flat, s.members, s.batched = flat, members, batched
    for _ in range(10):
        s.step()
        s.check_params()
    s.check_state()


def one_cycle(opt, k):
    """OneCycleLR with member k's own peak rate and momentum (Adam's family: its beta1)."""
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2 * (k + 1), total_steps=STEPS, cycle_momentum=True,
                                               base_momentum=0.5 + 0.1 * k)


def step_lr(step_size, gammas):
    """StepLR every `step_size` steps with member k's own factor `gammas[k]`."""
    return lambda opt, k: torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gammas[k])


SCHEDULED = {
    "sgd-onecycle": (torch.optim.SGD, lambda opt, k: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[0.1 * (k + 1), 0.05 * (k + 1)], total_steps=STEPS, cycle_momentum=True,
        base_momentum=0.8, max_momentum=0.95)),
    "adam-onecycle": (torch.optim.Adam, one_cycle),
    "rmsprop-steplr": (torch.optim.RMSprop, step_lr(3, (0.5, 0.8, 0.3))),
    "adagrad-steplr": (torch.optim.Adagrad, step_lr(4, (0.5, 2.0, 0.1))),
    "adamax-onecycle": (torch.optim.Adamax, one_cycle),
    "nadam-onecycle": (torch.optim.NAdam, one_cycle),
    "radam-steplr": (torch.optim.RAdam, step_lr(3, (0.5, 0.8, 0.3))),
    "adadelta-steplr": (torch.optim.Adadelta, step_lr(4, (0.5, 2.0, 0.1))),
    "rprop-steplr": (torch.optim.Rprop, step_lr(2, (0.5, 0.8, 0.3))),
}


# the member optimizers are never stepped, so their schedulers warn that they were
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("case", SCHEDULED)
def test_schedulers_are_followed(case):
    cls, make = SCHEDULED[case]
    s = Setup([cls] * K, SETTINGS[cls])
    schedules = [(make(a, k), make(b, k)) for k, (a, b) in enumerate(zip(s.solo, s.members))]
    seen = set()
    for _ in range(STEPS - 1):
        s.step()
        s.check_params()
        for a, b in schedules:
            a.step()
            b.step()
        seen.add(s.batched._key)
    assert len(seen) > 2  # the hyperparameters did change, and the batched rule followed them
    s.check_state()


def test_unsupported():
    assert unsupported({"_target_": "torch.optim.SGD", "lr": 0.1, "nesterov": True, "momentum": 0.9}) is None
    assert unsupported({"_target_": "torch.optim.AdamW", "amsgrad": False}) is None
    assert unsupported({"_target_": "torch.optim.Rprop"}) is None
    assert unsupported({"_target_": "torch.optim.NAdam"}) is None
    assert unsupported({"_target_": "torch.optim.LBFGS"}) == "torch.optim.LBFGS has no batched rule"
    assert unsupported({"_target_": "torch.optim.RAdam"}) is None
    assert unsupported({"_target_": "optlab.optim.QuickProp"}) is None
    assert unsupported({"_target_": "optlab.optim.Newton"}) == "optlab.optim.Newton has no batched rule"
    assert unsupported({"_target_": "no.such.Thing"}) == "no.such.Thing has no batched rule"
    assert unsupported({"_target_": "torch.optim.Adam", "amsgrad": True}) == "amsgrad=true"
    assert unsupported({"_target_": "torch.optim.SGD", "maximize": True}) == "maximize=true"
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="LBFGS has no batched rule"):
        BatchedOptimizer(torch.zeros(1, 2), [torch.optim.LBFGS(p)], [p])
    with pytest.raises(ValueError, match="amsgrad=true"):
        BatchedOptimizer(torch.zeros(1, 2), [torch.optim.Adam(p, amsgrad=True)], [p])
    q = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="mix update rules"):
        BatchedOptimizer(torch.zeros(2, 2), [torch.optim.SGD(p), torch.optim.Adam(q)], [p, q])
