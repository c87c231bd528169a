"""Float64 gradients of a torch model together with how far they may move when a float32
forward lands on the other side of an activation's kink.

A deep float32 forward drifts ~1e-4 from float64 by its last blocks (torch's own float32 does
too). A ReLU / ReLU6 / Hardswish input closer to a kink than that may take the other branch in
any float32 implementation; the forward barely changes, but the backward passes (or blocks) that
element's gradient and moves every gradient upstream of it by up to a few per cent. Comparing a
float32 implementation with the float64 gradients alone would then test luck, not arithmetic.

So: inputs closer to a kink than their layer's largest float32 drift (measured with torch's
float32 forward of the same batch) are "ambiguous"; for each, the backward is rerun with that
element's derivative taken from the kink's other side, and the absolute changes are summed per
gradient element. A correct float32 implementation is within that slack of the float64
gradients; the backward is linear in the derivatives, so any subset of flips stays inside it up
to second-order terms (covered by the caller's factor on the slack)."""

import copy

import torch

# Where each activation's derivative jumps.
KINKS = {torch.nn.ReLU: (0.0,), torch.nn.ReLU6: (0.0, 6.0), torch.nn.Hardswish: (-3.0, 3.0)}


class _FixedDerivative(torch.autograd.Function):
    """act(x) forward; backward multiplies by a derivative tensor the caller may edit between
    backward passes of one retained graph."""

    @staticmethod
    def forward(ctx, x, value, derivative):  # noqa: ARG004  (x: the graph edge)
        ctx.derivative = derivative
        return value.clone()

    @staticmethod
    def backward(ctx, g):
        return g * ctx.derivative, None, None


def _derivative(mod, x):
    z = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        (d,) = torch.autograd.grad(mod.forward(z).sum(), z)  # elementwise: the derivative
    return d


def _activation_inputs(model, x):
    """The input of every kink module in one no-grad forward, by module name."""
    seen = {}
    hooks = [mod.register_forward_pre_hook(
        lambda mod, inp, name=name: seen.__setitem__(name, inp[0].detach().double().clone()))
        for name, mod in model.named_modules() if type(mod) in KINKS]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def _drift(model, x):
    """Per kink module: the largest |float32 − float64| of its input (torch's float32), and how
    many ambiguous inputs it has weighted by 1 / (values per channel): one flip in a layer of
    few values per channel moves every gradient upstream of it; in an early, large one it is
    diluted among its neighbours."""
    f64 = _activation_inputs(copy.deepcopy(model).double().train(), x.double())
    f32 = _activation_inputs(copy.deepcopy(model).float().train(), x.float())
    drift, risk = {}, 0.0
    kinds = {name: type(mod) for name, mod in model.named_modules()}
    for name, v in f64.items():
        drift[name] = float((f32[name] - v).abs().max())
        per_channel = v.numel() / v.shape[1]
        for k in KINKS[kinds[name]]:
            risk += float(((v - k).abs() < drift[name] + 1e-9).sum()) / per_channel
    return drift, risk


def pick_input(model, draw, tries=8):
    """Of `tries` batches from draw(), the one whose ambiguous activation inputs weigh least."""
    best = None
    for _ in range(tries):
        x = draw()
        _, risk = _drift(model, x)
        if best is None or risk < best[0]:
            best = (risk, x)
        if risk == 0:
            break
    return best[1]


def gradients_with_kink_slack(model, x, loss_fn, max_flips=400):
    """Train-mode float64 step of a copy of `model` on `x`: returns (copy, loss, slack), where
    the copy holds autograd's gradients and updated running statistics, and slack maps each
    parameter name to the summed |gradient change| of every ambiguous element's flip."""
    drift, _ = _drift(model, x)

    ref = copy.deepcopy(model).double().train()
    sites = []  # (module, its input, its derivative tensor)
    def hook(mod, inp, out):
        xin = inp[0]
        d = _derivative(mod, xin)
        sites.append((mod, xin.detach(), d))
        return _FixedDerivative.apply(xin, out.detach(), d)
    names = {}
    for name, mod in ref.named_modules():
        if type(mod) in KINKS:
            mod.inplace = False  # the hook needs the input after the forward
            names[mod] = name
            mod.register_forward_hook(hook)
    loss = loss_fn(ref(x.double()))
    loss.backward(retain_graph=True)
    params = dict(ref.named_parameters())
    base = {n: p.grad.clone() for n, p in params.items()}

    flips = []
    for mod, xin, d in sites:
        margin = drift[names[mod]] + 1e-9
        for k in KINKS[type(mod)]:
            near = ((xin - k).abs() < margin).flatten().nonzero().flatten()
            if len(near):
                other = _derivative(mod, 2 * k - xin).flatten()
                flips += [(d, int(i), float(other[i])) for i in near
                          if float(other[i]) != float(d.flatten()[i])]
    if len(flips) > max_flips:
        raise AssertionError(f"{len(flips)} activation inputs sit within float32 drift of a "
                             f"kink: too many to bound (max {max_flips})")
    slack = {n: torch.zeros_like(g) for n, g in base.items()}
    for d, i, other in flips:
        flat = d.view(-1)
        kept = float(flat[i])
        flat[i] = other
        for p in params.values():
            p.grad = None
        loss.backward(retain_graph=True)
        for n, p in params.items():
            slack[n] += (p.grad - base[n]).abs()
        flat[i] = kept
    for n, p in params.items():
        p.grad = base[n]
    return ref, loss, slack
