"""PB2: explore by a time-varying Gaussian-process bandit (Parker-Holder et al., 2020).

Perturb moves hyperparameters at random, which a small population cannot afford.
PB2 instead models what each finished interval achieved: data points are
``(t, h)`` with ``h`` the interval's hparams scaled to [0, 1] (log-scale domains in
log space) and ``t`` when it ended (in ready intervals), and the target is the
score improvement over the interval, standardised. The kernel is the paper's
TV-GP one, a squared exponential in ``h`` times ``(1 - ε)^{|t - t'| / 2}``, so old
intervals count less as training moves on. Its hyperparameters (length scale,
signal and noise variance, ε) maximise the marginal likelihood. An exploited
member then gets the ``h`` within the bounds that maximises the upper confidence
bound ``μ(t_now, h) + √β_t σ(t_now, h)``. As in the paper's parallel version
(GP-BUCB, Desautels et al.), ``σ`` is also conditioned on the hparams the other
members are training with right now: a GP's variance does not depend on the values
still to come, so members exploited at the same time spread out instead of all
picking the same point.

Pure NumPy/SciPy, no I/O; the only randomness is drawn from the run's RNG, so a run
is reproducible and resumes identically.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from .explore import ExploreContext, ExploreResult, Perturb, apply_explore, check_explore
from .explore import history_size as wanted_history
from .space import Choice, Float, Gene, Int, Space

# (low, high) of each kernel hyperparameter; inputs live in [0, 1], targets are standardised
LENGTHSCALE = (0.05, 2.0)
VARIANCE = (0.05, 20.0)
NOISE = (1e-4, 2.0)
EPSILON = (0.0, 0.5)  # forgetting per ready interval; the paper's reference code caps it at 0.5
STARTS = ((0.3, 1.0, 0.1, 0.05), (1.0, 1.0, 0.5, 0.2), (0.1, 1.0, 0.01, 0.01))
CLIP_Y = 3.0  # standardised improvements beyond ±3 σ are clipped: one outlier must not rule


@dataclass(frozen=True)
class KernelParams:
    lengthscale: float
    variance: float
    noise: float
    epsilon: float


def tv_kernel(x1: np.ndarray, t1: np.ndarray, x2: np.ndarray, t2: np.ndarray,
              p: KernelParams) -> np.ndarray:
    """Squared exponential in the hparams times the paper's time decay (1-ε)^{|t-t'|/2}."""
    d2 = ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1)
    dt = np.abs(t1[:, None] - t2[None, :])
    return p.variance * np.exp(-0.5 * d2 / p.lengthscale**2) * (1.0 - p.epsilon) ** (0.5 * dt)


def _cholesky(k: np.ndarray) -> np.ndarray:
    """Cholesky factor; a little jitter rescues a matrix that rounding made indefinite."""
    jitter = 0.0
    for _ in range(6):
        try:
            return np.linalg.cholesky(k + jitter * np.eye(len(k)))
        except np.linalg.LinAlgError:
            jitter = 1e-8 if jitter == 0.0 else jitter * 10
    raise np.linalg.LinAlgError("kernel matrix is not positive definite")


class GP:
    """Exact GP regression with the time-varying kernel (zero prior mean)."""

    def __init__(self, x: np.ndarray, t: np.ndarray, y: np.ndarray, params: KernelParams) -> None:
        self.x, self.t, self.y, self.params = x, t, y, params
        k = tv_kernel(x, t, x, t, params) + params.noise * np.eye(len(x))
        self.chol = _cholesky(k)
        self.alpha = cho_solve((self.chol, True), y)

    def predict(self, xs: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance of the latent improvement (noise not included)."""
        ks = tv_kernel(xs, ts, self.x, self.t, self.params)
        v = solve_triangular(self.chol, ks.T, lower=True)
        var = self.params.variance - (v**2).sum(0)
        return ks @ self.alpha, np.maximum(var, 1e-12)

    def with_pending(self, xp: np.ndarray, tp: np.ndarray) -> GP:
        """The same GP also conditioned on points still being evaluated: only its
        variance is meaningful (GP-BUCB), so their unknown targets are set to 0."""
        if len(xp) == 0:
            return self
        y = np.concatenate([self.y, np.zeros(len(xp))])
        return GP(np.vstack([self.x, xp]), np.concatenate([self.t, tp]), y, self.params)


def neg_log_likelihood(theta: np.ndarray, d2: np.ndarray, dt: np.ndarray,
                       y: np.ndarray) -> tuple[float, np.ndarray]:
    """Negative log marginal likelihood and its gradient in theta = (log lengthscale,
    log variance, log noise, epsilon), given squared hparam and absolute time distances."""
    ls, var, noise, eps = math.exp(theta[0]), math.exp(theta[1]), math.exp(theta[2]), theta[3]
    kf = var * np.exp(-0.5 * d2 / ls**2) * (1.0 - eps) ** (0.5 * dt)
    n = len(y)
    try:
        chol = np.linalg.cholesky(kf + noise * np.eye(n))
    except np.linalg.LinAlgError:
        return 1e10, np.zeros(4)
    alpha = cho_solve((chol, True), y)
    value = 0.5 * y @ alpha + np.log(np.diag(chol)).sum() + 0.5 * n * math.log(2 * math.pi)
    inner = np.outer(alpha, alpha) - cho_solve((chol, True), np.eye(n))
    # d(-log L)/dθ = -½ tr((ααᵀ - K⁻¹) ∂K/∂θ); every ∂K/∂θ is symmetric
    ik = inner * kf
    grad = [(ik * d2).sum() / ls**2, ik.sum(), noise * np.trace(inner),
            -(ik * dt).sum() / (2.0 * (1.0 - eps))]
    return float(value), -0.5 * np.array(grad)


def fit_gp(x: np.ndarray, t: np.ndarray, y: np.ndarray) -> GP:
    """Kernel hyperparameters by maximum marginal likelihood: L-BFGS-B from fixed
    starts, so the same data always gives the same fit."""
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    dt = np.abs(t[:, None] - t[None, :])
    bounds = [tuple(math.log(b) for b in LENGTHSCALE), tuple(math.log(b) for b in VARIANCE),
              tuple(math.log(b) for b in NOISE), EPSILON]
    best = None
    for ls, var, noise, eps in STARTS:
        theta0 = np.array([math.log(ls), math.log(var), math.log(noise), eps])
        res = minimize(neg_log_likelihood, theta0, args=(d2, dt, y), jac=True,
                       method="L-BFGS-B", bounds=bounds, options={"maxiter": 100})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    th = best.x
    params = KernelParams(math.exp(th[0]), math.exp(th[1]), math.exp(th[2]),
                          float(np.clip(th[3], *EPSILON)))
    return GP(x, t, y, params)


def beta(n: int) -> float:
    """β_t of the UCB: grows like log t, as the TV-GP-UCB regret bound needs; the
    constants are those of the PB2 authors' implementation (0.2 + log(0.4·n))."""
    return 0.2 + max(0.0, math.log(0.4 * max(n, 1)))


def maximize_ucb(mean_gp: GP, var_gp: GP, now: float, kappa: float, dim: int,
                 rng: np.random.Generator, extra: np.ndarray | None = None,
                 candidates: int = 256, polish: int = 4) -> np.ndarray:
    """argmax over [0, 1]^dim of μ + κσ: score random candidates (and ``extra``
    points), then refine the best few with L-BFGS-B within the bounds."""

    def ucb(xs: np.ndarray) -> np.ndarray:
        ts = np.full(len(xs), now)
        mu, _ = mean_gp.predict(xs, ts)
        _, var = var_gp.predict(xs, ts)
        return mu + kappa * np.sqrt(var)

    pool = rng.uniform(size=(candidates, dim))
    if extra is not None and len(extra):
        pool = np.vstack([pool, np.clip(extra, 0.0, 1.0)])
    scores = ucb(pool)
    best_x, best_v = pool[int(np.argmax(scores))], float(np.max(scores))
    for i in np.argsort(-scores, kind="stable")[:polish]:
        res = minimize(lambda z: -float(ucb(z[None, :])[0]), pool[i], method="L-BFGS-B",
                       bounds=[(0.0, 1.0)] * dim, options={"maxiter": 50})
        if -res.fun > best_v:
            best_x, best_v = res.x, float(-res.fun)
    return np.clip(best_x, 0.0, 1.0)


# -- hparams <-> the unit cube -----------------------------------------------------------

def _range(dom: Float | Int | Choice) -> tuple[float, float]:
    if isinstance(dom, Choice):  # an ordered choice is modelled by its index
        return 0.0, float(max(len(dom.values) - 1, 1))
    if dom.log:
        return math.log(dom.low), math.log(dom.high)
    return float(dom.low), float(dom.high)


def encode(space: Space, hparams: Mapping[str, Any]) -> np.ndarray:
    """Hparams as a point of [0, 1]^d (log-scale domains in log space, an ordered choice
    by its index)."""
    out = []
    for name, dom in space.items():
        lo, hi = _range(dom)  # type: ignore[arg-type]
        if isinstance(dom, Choice):
            v = float(dom._index(hparams[name]))
        else:
            v = float(hparams[name])
            v = math.log(v) if dom.log else v  # type: ignore[attr-defined]
        out.append(min(max((v - lo) / (hi - lo), 0.0), 1.0))
    return np.array(out)


def decode(space: Space, u: np.ndarray) -> dict[str, Any]:
    """A point of [0, 1]^d back to hparams; an Int or a choice's index is rounded to the
    nearest whole number."""
    out = {}
    for (name, dom), ui in zip(space.items(), u, strict=True):
        lo, hi = _range(dom)  # type: ignore[arg-type]
        v = lo + float(ui) * (hi - lo)
        if isinstance(dom, Choice):
            out[name] = dom.values[min(int(round(v)), len(dom.values) - 1)]
            continue
        out[name] = dom.clip(math.exp(v) if dom.log else v)  # type: ignore[attr-defined]
    return out


def standardize(y: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, clipped to ±CLIP_Y (a constant series becomes zeros)."""
    sd = float(y.std())
    z = (y - y.mean()) / sd if sd > 1e-12 else np.zeros_like(y)
    return np.clip(z, -CLIP_Y, CLIP_Y)


class PB2:
    """Population Based Bandits: new hparams for an exploited member by GP-UCB.

    Needs numeric hyperparameters: ``Float``, ``Int`` (rounded after a continuous
    optimum) or an ordered ``Choice`` (modelled by its index, as its order says
    neighbours are alike; an unordered one has no such distance and is refused). Until ``min_points`` intervals with a known improvement exist (the start
    of a run), it explores with ``fallback`` (default ``Perturb()``). It keeps the
    latest ``max_points`` observations (the GP costs O(n³) per decision).
    """

    def __init__(self, min_points: int = 4, max_points: int = 100,
                 fallback: Any = None) -> None:
        for name, v, low in (("min_points", min_points, 1), ("max_points", max_points, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"PB2({name}={v!r}): give an int >= {low}.")
        if max_points < min_points:
            raise ValueError(
                f"PB2(min_points={min_points}, max_points={max_points}): max_points must be "
                ">= min_points.")
        fallback = Perturb() if fallback is None else fallback
        check_explore(fallback)
        if wanted_history(fallback):
            raise ValueError(f"PB2(fallback={fallback!r}): the fallback explores while there "
                             "is no history yet; give e.g. torchpbt.Perturb().")
        self.min_points, self.max_points, self.fallback = min_points, max_points, fallback

    @property
    def history_size(self) -> int:
        return self.max_points

    def check_space(self, space: Mapping[str, Any]) -> None:
        """PB2's GP needs a distance between values: refuse an unordered categorical
        hparam (or an architecture gene) before any work."""
        bad = [n for n, d in space.items()
               if isinstance(d, Gene) or (isinstance(d, Choice) and not d.ordered)]
        if bad:
            raise ValueError(
                f"PB2 models numeric and ordered hparams only; {bad} are unordered "
                "Choice/Gene hparams. Use explore=torchpbt.Perturb() for such a space, or "
                "make the choice ordered (Choice([...], ordered=True)) or a Float/Int.")

    def __call__(self, hparams: Mapping[str, Any], space: Space, rng: random.Random,
                 context: ExploreContext | None = None) -> ExploreResult:
        self.check_space(space)
        names = set(space)
        obs = [o for o in (context.observations if context else ()) if names <= set(o.hparams)]
        finite = [o.improvement for o in obs if o.improvement is not None]
        if context is None or len(finite) < self.min_points:
            new, ops = apply_explore(self.fallback, hparams, space, rng)
            return new, {n: f"fallback {op}" for n, op in ops.items()}
        worst = min(finite)  # a failed interval counts as the worst improvement seen
        x = np.array([encode(space, o.hparams) for o in obs])
        t = np.array([o.time for o in obs], dtype=float)
        y = standardize(np.array([worst if o.improvement is None else o.improvement
                                  for o in obs], dtype=float))
        pending = [(pt, ph) for pt, ph in context.pending if names <= set(ph)]
        xp = np.array([encode(space, ph) for _, ph in pending]).reshape(-1, len(space))
        tp = np.array([pt for pt, _ in pending], dtype=float)
        np_rng = np.random.default_rng(rng.getrandbits(64))
        with threadpool_limits(1):  # tiny matrices: extra BLAS threads only fight for cores
            gp = fit_gp(x, t, y)
            u = maximize_ucb(gp, gp.with_pending(xp, tp), context.now,
                             math.sqrt(beta(len(obs))), len(space), np_rng,
                             extra=x[np.argsort(-y, kind="stable")[:4]])
        return decode(space, u), {n: "pb2" for n in space}

    def to_spec(self) -> dict[str, Any]:
        return {"min_points": self.min_points, "max_points": self.max_points,
                "fallback": self.fallback}

    def __repr__(self) -> str:
        return (f"PB2(min_points={self.min_points}, max_points={self.max_points}, "
                f"fallback={self.fallback!r})")

