"""PBT of an actor-critic agent (A2C with GAE) on gymnasium's CartPole-v1, offline.

Each member is an A2C agent: separate 64-unit tanh actor and critic, Adam,
8 vectorised CartPole environments. PBT tunes the learning rate, the entropy
cost, the discount and the unroll length while the agents learn.

One torchpbt *step* is 256 environment transitions (8 envs × 32 steps), cut
into 256 / (8 · unroll) A2C updates, so every member consumes exactly
``ENV_STEPS_PER_STEP`` transitions per step whatever its unroll length, and
runs compare at equal environment steps. The discount is tuned as a horizon
1 / (1 − γ) on a log scale (10 … 1000, i.e. γ = 0.9 … 0.999): PBT's ×0.8/×1.2
perturbation of γ itself would jump straight to its bounds.

The score is a greedy evaluation: the mean return of 16 episodes, one per
environment, played with the argmax action from 16 fixed start states (the
same for every member and every evaluation). It scores exactly the weights
that are checkpointed and copied by exploit, on the same start states for
everyone; training-episode returns would lag behind the weights (episodes
started before an exploit) and carry the entropy bonus's exploration noise.

    python examples/cartpole.py                        # 8 members × 400 steps (~100k env steps)
    python examples/cartpole.py --population 4 --steps 100 --quiet
    python examples/cartpole.py --backend vectorized   # the population as one batched model
    torchpbt run examples/cartpole.py -- --steps 200
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import torchpbt as pbt

N_ENVS, MAX_UNROLL = 8, 32
ENV_STEPS_PER_STEP = N_ENVS * MAX_UNROLL  # 256 transitions per torchpbt step
EVAL_ENVS, EVAL_SEED = 16, 12345
GAE_LAMBDA = 0.95

SPACE = {
    "lr": pbt.Float(1e-4, 3e-2, log=True),
    "entropy_cost": pbt.Float(1e-4, 0.1, log=True),
    "horizon": pbt.Float(10.0, 1000.0, log=True),  # discount = 1 - 1/horizon
    "unroll": pbt.Choice([8, 16, 32], ordered=True),
}


def make_envs(n: int) -> gym.vector.VectorEnv:
    """CartPole-v1's numpy-vectorised version: n envs for the price of one."""
    return gym.make_vec("CartPole-v1", num_envs=n, vectorization_mode="vector_entry_point")


class ActorCritic(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.actor = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                   nn.Tanh(), nn.Linear(hidden, 2))
        self.critic = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                    nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(obs), self.critic(obs).squeeze(-1)


@torch.no_grad()
def greedy_return(model: nn.Module, episodes: int = EVAL_ENVS, seed: int = EVAL_SEED) -> float:
    """Mean return of one greedy episode per env, from start states fixed by ``seed``."""
    envs, device = make_envs(episodes), next(model.parameters()).device
    obs, _ = envs.reset(seed=seed)
    total, alive = np.zeros(episodes), np.ones(episodes, dtype=bool)
    while alive.any():  # CartPole-v1 truncates at 500 steps
        logits = model.actor(torch.as_tensor(obs, device=device))
        obs, reward, term, trunc, _ = envs.step(logits.argmax(-1).cpu().numpy())
        total += reward * alive
        alive &= ~(term | trunc)
    envs.close()
    return float(total.mean())


class CartPoleMember(pbt.TorchMember):
    """A2C agent. The environments live in the instance, not in the checkpoint: a member
    rebuilt from a checkpoint (resume, another worker) starts fresh episodes."""

    def setup(self, hparams):
        torch.set_num_threads(1)  # tiny networks: threads only add overhead
        self.model = ActorCritic().to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=hparams["lr"], eps=1e-5)
        self.envs = make_envs(N_ENVS)
        obs, _ = self.envs.reset(seed=int(torch.randint(2**31, ()).item()))  # from the task seed
        self.obs = torch.as_tensor(obs, device=self.device)
        self.was_done = torch.zeros(N_ENVS, dtype=torch.bool, device=self.device)  # next step() only resets
        self.env_steps = 0  # transitions behind these weights (follows them on exploit)

    def extra_state(self):
        return {"env_steps": self.env_steps}

    def load_extra_state(self, extra):
        self.env_steps = int(extra.get("env_steps", 0))

    def train(self, steps):
        unroll = int(self.hparams["unroll"])
        loss = torch.zeros(())
        for _ in range(steps * (MAX_UNROLL // unroll)):
            loss = self.update(unroll)
        return loss.item()

    def update(self, unroll: int) -> torch.Tensor:
        """Collect unroll × N_ENVS transitions, then one A2C step with GAE(λ) advantages."""
        gamma = 1.0 - 1.0 / self.hparams["horizon"]
        obs, act, rew, term, done, valid = [], [], [], [], [], []
        dev = self.device
        for _ in range(unroll):
            with torch.no_grad():  # two actions: P(right) = softmax(logits)[1]
                p_right = self.model.actor(self.obs).softmax(-1)[:, 1]
                a = (torch.rand(N_ENVS, device=dev) < p_right).long()
            nxt, r, te, tr, _ = self.envs.step(a.cpu().numpy())
            obs.append(self.obs), act.append(a), rew.append(torch.as_tensor(r, device=dev))
            te, d = torch.as_tensor(te, device=dev), torch.as_tensor(te | tr, device=dev)
            # gymnasium's next-step autoreset: after a done, the next step only resets
            term.append(te), done.append(d), valid.append(~self.was_done)
            self.obs, self.was_done = torch.as_tensor(nxt, device=dev), d
        self.env_steps += unroll * N_ENVS
        logits, values = self.model(torch.stack(obs + [self.obs]).reshape(-1, 4))
        logits, values = logits[:-N_ENVS], values.reshape(unroll + 1, N_ENVS)
        adv, returns = self.gae(values.detach(), rew, term, done, valid, gamma)
        mask = torch.stack(valid).reshape(-1).float()
        dist = torch.distributions.Categorical(logits=logits)
        policy = -(dist.log_prob(torch.stack(act).reshape(-1)) * adv.reshape(-1))
        value = 0.5 * (returns.reshape(-1) - values[:-1].reshape(-1)) ** 2
        entropy = dist.entropy()
        n = mask.sum().clamp(min=1.0)
        loss = ((policy + value - self.hparams["entropy_cost"] * entropy) * mask).sum() / n
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 0.5)
        self.optimizer.step()
        return loss.detach()

    @staticmethod
    def gae(values, rew, term, done, valid, gamma):
        """GAE(λ). At a truncation (500 steps) the next obs is the final one, so it
        bootstraps from V(final); a termination does not; reset-only steps get 0."""
        adv, a = values.new_zeros(len(rew), values.shape[1]), values.new_zeros(values.shape[1])
        for t in reversed(range(len(rew))):
            delta = rew[t] + gamma * (~term[t]) * values[t + 1] - values[t]
            a = torch.where(valid[t], delta + gamma * GAE_LAMBDA * (~done[t]) * a, 0.0)
            adv[t] = a
        return adv, adv + values[:-1]

    def evaluate(self):
        return greedy_return(self.model)


# -- the same agent for backend="vectorized": the population as one batched model -------
VECTOR_SPACE = {k: v for k, v in SPACE.items() if k != "unroll"}  # unroll fixed: lockstep


class CartPoleEnvs:
    """One member's N_ENVS environments and where their episodes stand."""

    def __init__(self) -> None:
        self.envs = make_envs(N_ENVS)
        obs, _ = self.envs.reset(seed=int(torch.randint(2**31, ()).item()))
        self.obs = torch.as_tensor(obs)
        self.was_done = torch.zeros(N_ENVS, dtype=torch.bool)


class VectorCartPole(pbt.VectorMember):
    """A2C as above with unroll 32 (one update per step); all members' policies act in
    one batched forward pass, then one batched update."""

    optimizer, optimizer_defaults, max_grad_norm = "adam", {"eps": 1e-5}, 0.5

    def build(self, hparams):
        torch.set_num_threads(1)
        return ActorCritic()

    def make_env(self):
        return CartPoleEnvs()

    def collect(self, policy, envs, hparams):
        """MAX_UNROLL steps of every member's envs: tensors shaped (members, time, envs, ...)."""
        steps = []
        for _ in range(MAX_UNROLL):
            obs = torch.stack([e.obs for e in envs])
            p_right = policy(obs)[0].softmax(-1)[..., 1]
            a = (torch.rand(p_right.shape) < p_right).long()
            row = []
            for e, act in zip(envs, a, strict=True):
                nxt, r, te, tr, _ = e.envs.step(act.numpy())
                te, d = torch.as_tensor(te), torch.as_tensor(te | tr)
                row.append((e.obs, act, torch.as_tensor(r, dtype=torch.float32), te, d,
                            ~e.was_done))
                e.obs, e.was_done = torch.as_tensor(nxt), d
            steps.append([torch.stack(x) for x in zip(*row, strict=True)])
        obs, act, rew, term, done, valid = (torch.stack(x, 1) for x in zip(*steps, strict=True))
        last = torch.stack([e.obs for e in envs])[:, None]
        return torch.cat([obs, last], 1), act, rew, term, done, valid

    def loss(self, model, batch, hparams):
        obs, act, rew, term, done, valid = batch  # one member's: (time, envs, ...)
        gamma = 1.0 - 1.0 / hparams["horizon"]
        logits, values = model(obs.reshape(-1, 4))
        logits, values = logits[:-N_ENVS], values.reshape(MAX_UNROLL + 1, N_ENVS)
        adv, returns = CartPoleMember.gae(values.detach(), rew, term, done, valid, gamma)
        logp = logits.log_softmax(-1)  # written out: torch.distributions does not vmap
        policy = -logp.gather(-1, act.reshape(-1, 1)).squeeze(-1) * adv.reshape(-1)
        value = 0.5 * (returns.reshape(-1) - values[:-1].reshape(-1)) ** 2
        entropy = -(logp.exp() * logp).sum(-1)
        mask = valid.reshape(-1).float()
        return ((policy + value - hparams["entropy_cost"] * entropy) * mask).sum() / \
            mask.sum().clamp(min=1.0)

    @torch.no_grad()
    def score_all(self, policy, hparams):
        """greedy_return for every member at once: each member's 16 start states, one
        batched forward pass per time step."""
        members = len(hparams["lr"])
        envs = [make_envs(EVAL_ENVS) for _ in range(members)]
        obs = np.stack([e.reset(seed=EVAL_SEED)[0] for e in envs])
        total, alive = np.zeros((members, EVAL_ENVS)), np.ones((members, EVAL_ENVS), dtype=bool)
        while alive.any():
            actions = policy(torch.as_tensor(obs))[0].argmax(-1).numpy()
            for m, e in enumerate(envs):
                obs[m], reward, term, trunc, _ = e.step(actions[m])
                total[m] += reward * alive[m]
                alive[m] &= ~(term | trunc)
        for e in envs:
            e.close()
        return torch.as_tensor(total.mean(1))


def main(argv=None):
    p = argparse.ArgumentParser(description="PBT of A2C on CartPole-v1")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--steps", type=int, default=400,
                   help=f"steps per member; one step = {ENV_STEPS_PER_STEP} env transitions")
    p.add_argument("--ready-every", type=int, default=20)
    p.add_argument("--workers", type=int, default=None, help="default: number of cores")
    p.add_argument("--backend", choices=("serial", "local", "vectorized"), default=None,
                   help="'vectorized': all members as one batched model (unroll fixed at 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pb2", action="store_true", help="explore with PB2 instead of Perturb")
    p.add_argument("--run-dir", default=None, help="default: runs/cartpolemember-<time>")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    vector = a.backend == "vectorized"
    result = pbt.run(
        VectorCartPole if vector else CartPoleMember, VECTOR_SPACE if vector else SPACE,
        population=a.population, steps=a.steps,
        ready_every=a.ready_every, exploit=pbt.Truncation(0.25), explore=pbt.PB2() if a.pb2 else pbt.Perturb(),
        backend=a.backend, workers=a.workers, seed=a.seed, run_dir=a.run_dir,
        progress=not a.quiet,
    )
    h = result.best_hparams
    print(f"best member {result.best_member_id}: greedy return {result.best_score:.1f} "
          f"(max 500) after {a.steps * ENV_STEPS_PER_STEP:,} env steps per member; lr "
          f"{h['lr']:.2e}, entropy cost {h['entropy_cost']:.2e}, discount "
          f"{1 - 1 / h['horizon']:.4f}, unroll {h.get('unroll', MAX_UNROLL)}")
    print(f"results are in {result.run_dir.resolve()}  (torchpbt status {result.run_dir})")
    return result


if __name__ == "__main__":
    main()
