"""Tabular Q-learning (ch. 8), beside value iteration on the environment's own transition model.

A finite Markov decision process: states s ∈ {0, ..., S-1}, actions a ∈ {0, ..., A-1}, the model
p(s', r | s, a). Written as arrays: P(s' | s, a) (S, A, S), the probability of moving to s' and the
episode going on (the mass of terminating moves is left out, so a terminal state's value is 0), and
r(s, a) (S, A), the expected reward of a move. For a discount γ ∈ [0, 1):

    value iteration      V_{k+1}(s) = max_a [r(s, a) + γ Σ_s' P(s' | s, a) V_k(s')]   -> V*, π*(s) = argmax_a of it
    policy evaluation    V^π = r_π + γ P_π V^π,  i.e. (I - γ P_π) V^π = r_π,  P_π(s, s') = P(s' | s, π(s))
    Q-learning           Q(s, a) <- Q(s, a) + α (r + γ (1 - d) max_a' Q(s', a') - Q(s, a))

with d = 1 when the move ended the episode (a time-limit cut is not an end: s' keeps its value) and α
the step size. Q-learning learns from sampled moves alone, off-policy: it acts ε-greedily (a uniform
action with probability ε, else a greedy one, ties broken at random), ε decaying linearly from
ε_start to ε_end over the first `exploration_steps` steps, and its table converges to Q* when every
pair is tried often enough. The learned greedy policy π(s) = argmax_a Q(s, a) is then judged exactly:
its value V^π from the start distribution ρ₀, test/policy_value = Σ_s ρ₀(s) V^π(s), beside the
optimum's, test/optimal_value = Σ_s ρ₀(s) V*(s) (the report's `value_iteration` reference row).

The table is the model's parameter. Each training step applies the TD rule to the moves of
`batch_steps` environment steps, in order, acted with the table as it was at the first of them
(batch_steps = 1: the textbook's online update), giving Q⁺; then one step of SGD at rate 1 on
½ ‖Q - Q⁺‖² (its gradient is Q - Q⁺) moves the table there (Lightning's manual optimization: its
optimizer steps are what its step counter and checkpoints follow). `alpha`, not the experiment's
optimizer, is the step size.

Shapes: the table Q (S, A); a batch of moves (K,) each; observations are state indices (B,).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from modules._exploration import epsilon_schedule
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.core.episodes import make_env
from pipeline.core.reinforcement import ReinforcementModule


def environment_model(environment: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A gymnasium toy-text environment's own model (`env.unwrapped.P[s][a]`, a list of (probability,
    s', reward, terminated)) as arrays: P(s' | s, a) of the moves that go on (S, A, S), the expected
    reward r(s, a) (S, A), and the start distribution ρ₀ (S,); float64."""
    env = make_env(environment)
    model, start = env.unwrapped.P, env.unwrapped.initial_state_distrib
    states, actions = env.observation_space.n, env.action_space.n
    env.close()
    transitions = torch.zeros(states, actions, states, dtype=torch.float64)
    rewards = torch.zeros(states, actions, dtype=torch.float64)
    for s in range(states):
        for a in range(actions):
            for probability, next_state, reward, terminated in model[s][a]:
                rewards[s, a] += probability * reward
                if not terminated:
                    transitions[s, a, int(next_state)] += probability
    return transitions, rewards, torch.as_tensor(start, dtype=torch.float64)


def value_iteration(transitions: torch.Tensor, rewards: torch.Tensor, gamma: float,
                    tolerance: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """The Bellman optimality backup V(s) <- max_a [r(s, a) + γ Σ_s' P(s' | s, a) V(s')] from V = 0 until
    no value moves by more than `tolerance` (a γ-contraction, so V is then within γ tol / (1 - γ) of V*):
    V* (S,) and the greedy policy π* (S,), the first maximizing action. transitions (S, A, S), rewards (S, A)."""
    values = torch.zeros(len(rewards), dtype=transitions.dtype)
    while True:
        q_values = rewards + gamma * transitions @ values  # (S, A)
        updated = q_values.max(dim=1).values
        if (updated - values).abs().max() <= tolerance:
            return updated, q_values.argmax(dim=1)
        values = updated


def policy_evaluation(transitions: torch.Tensor, rewards: torch.Tensor, policy: torch.Tensor, gamma: float,
                      tolerance: float = 1e-12) -> torch.Tensor:
    """V^π (S,) of a deterministic policy π (S,) by the Bellman expectation backup
    V <- r_π + γ P_π V from V = 0, until no value moves by more than `tolerance`."""
    states = torch.arange(len(rewards))
    transitions_pi, rewards_pi = transitions[states, policy], rewards[states, policy]  # (S, S), (S,)
    values = torch.zeros(len(rewards), dtype=transitions.dtype)
    while True:
        updated = rewards_pi + gamma * transitions_pi @ values
        if (updated - values).abs().max() <= tolerance:
            return updated
        values = updated


def q_learning_update(q_table, state: int, action: int, reward: float, next_state: int, terminated: bool,
                      alpha: float, gamma: float) -> float:
    """Q(s, a) += α (r + γ (1 - d) max_a' Q(s', a') - Q(s, a)) on `q_table` (S, A), in place; the TD error.
    The table: a tensor, or nested lists of floats (a training step's, for speed: one move is a few
    scalar operations)."""
    td_target = reward + (0.0 if terminated else gamma * float(max(q_table[next_state])))
    td_error = td_target - float(q_table[state][action])
    q_table[state][action] += alpha * td_error
    return td_error


def epsilon_greedy(q_values: list[float], epsilon: float, explore_draw: float, choice_draw: float) -> int:
    """A uniform action with probability ε, else one of the actions of largest Q(s, ·) (A values), uniformly;
    explore_draw, choice_draw: uniform draws in [0, 1) that decide."""
    if explore_draw < epsilon:
        candidates = list(range(len(q_values)))
    else:
        candidates = [action for action, value in enumerate(q_values) if value == max(q_values)]
    return candidates[int(choice_draw * len(candidates))]


class TabularQLearning(ReinforcementModule):
    """Q-learning with a table Q (S, A): ε-greedy moves, TD updates in order, no gradient."""

    MANUAL_OPTIMIZATION = True  # the TD rule computes the new table; one optimizer step moves there

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        alpha: float,  # step size α in (0, 1]
        gamma: float,  # discount γ in [0, 1)
        epsilon_start: float,  # exploration rate ε at the first step
        epsilon_end: float,  # ε after the decay
        exploration_steps: int,  # environment steps over which ε decays linearly
        batch_steps: int,  # environment steps whose moves one training step applies
        steps_per_epoch: int,  # environment steps per epoch
        val_episodes: int,  # greedy validation episodes per epoch (fixed seeds)
        solved_return: float,  # stop once val/mean_return reaches it; 0: train every epoch
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler, steps_per_epoch=steps_per_epoch,
                         val_episodes=val_episodes, solved_return=solved_return)
        self.alpha, self.gamma = alpha, gamma
        self.epsilon_start, self.epsilon_end, self.exploration_steps = epsilon_start, epsilon_end, exploration_steps
        self.batch_steps = batch_steps
        env = make_env(self.environment)
        states, actions = env.observation_space.n, env.action_space.n
        env.close()
        self.q_table = nn.Parameter(torch.zeros(states, actions, dtype=torch.float64))  # Q (S, A)
        self._env = None

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        ReinforcementModule.check_config(model, data)
        if not 0 < model["alpha"] <= 1:
            raise ValueError(f"alpha: must be in (0, 1], got {model['alpha']}")
        if not 0 <= model["gamma"] < 1:
            raise ValueError(f"gamma: must be in [0, 1), got {model['gamma']}")
        for key in ("epsilon_start", "epsilon_end"):
            if not 0 <= model[key] <= 1:
                raise ValueError(f"{key}: must be a probability in [0, 1], got {model[key]}")
        for key in ("exploration_steps", "batch_steps"):
            if model[key] < 1:
                raise ValueError(f"{key}: must be a positive integer, got {model[key]}")

    @classmethod
    def check_experiment(cls, experiment) -> None:
        from pipeline import data

        super().check_experiment(experiment)
        if data.DATASETS[experiment.dataset].spec.input_shape != ():
            discrete = [name for name, entry in data.DATASETS.items() if entry.is_environment and entry.spec.input_shape == ()]
            raise ValueError(f"dataset: a table needs discrete states (observations of shape ()), {experiment.dataset} "
                             f"has vectors; allowed: {', '.join(discrete)}")
        if experiment.trainer.devices != 1 or experiment.trainer.num_nodes != 1:
            raise ValueError("trainer.devices: one table learns in one process; set devices and num_nodes to 1")

    @staticmethod
    def small_config(model: dict) -> dict:
        """A few hundred environment steps an epoch."""
        return {**model, "steps_per_epoch": 200, "val_episodes": 2, "solved_return": 0, "exploration_steps": 200}

    def configure_optimizers(self):
        return torch.optim.SGD([self.q_table], lr=1.0)  # one step from Q along -(Q - Q⁺) lands on Q⁺

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.q_table[observations.long()]  # (B, A)

    def act_greedy(self, observations: torch.Tensor) -> torch.Tensor:
        return self(observations).argmax(dim=1)

    # --- rollouts -------------------------------------------------------------------------------

    def _start_rollouts(self) -> None:
        self._env = make_env(self.environment)
        seed = self.rollout_seed()
        self._generator = torch.Generator().manual_seed(seed)
        restored = self.restored_state()
        if restored is not None:  # the episode in progress at the checkpoint starts again
            self._generator.set_state(restored["generator"])
            seed = int(restored["seed"]) + self.env_steps
        self._seed = seed
        self._state, _ = self._env.reset(seed=seed)
        self._episode_return = 0.0

    def rollout_state(self) -> dict:
        return {} if self._env is None else {"generator": self._generator.get_state(), "seed": self._seed}

    def experience(self) -> Iterator[dict[str, torch.Tensor]]:
        if self._env is None:
            self._start_rollouts()
        env, moves = self._env, []
        # the loop's state in locals (a module's attribute assignment costs more than a move), kept on the
        # module at each batch: what validation, checkpoints and the next epoch see
        state, episode_return = int(self._state), self._episode_return
        for step in range(self.steps_per_epoch):
            if step % self.batch_steps == 0:  # the table the batch's moves act with, as floats, and their draws
                table = self.q_table.tolist()
                draws = torch.rand(self.batch_steps, 2, generator=self._generator, dtype=torch.float64).tolist()
            epsilon = epsilon_schedule(self.env_steps + len(moves), self.epsilon_start, self.epsilon_end,
                                       self.exploration_steps)
            action = epsilon_greedy(table[state], epsilon, *draws[step % self.batch_steps])
            next_state, reward, terminated, truncated, _ = env.step(action)
            moves.append((state, action, float(reward), int(next_state), float(terminated)))
            episode_return += reward
            if terminated or truncated:
                self.episode_finished(episode_return)
                episode_return = 0.0
                next_state, _ = env.reset()
            state = int(next_state)
            if len(moves) == self.batch_steps or step == self.steps_per_epoch - 1:
                self._state, self._episode_return = state, episode_return
                self.env_steps += len(moves)
                yield self._batch(moves)
                moves = []

    @staticmethod
    def _batch(moves: list[tuple]) -> dict[str, torch.Tensor]:
        state, action, reward, next_state, terminated = zip(*moves)
        return {"state": torch.tensor(state), "action": torch.tensor(action), "reward": torch.tensor(reward),
                "next_state": torch.tensor(next_state), "terminated": torch.tensor(terminated)}

    # --- learning -------------------------------------------------------------------------------

    def training_step(self, batch, batch_idx):
        """The TD updates of the batch's moves, in order, then the table moved to their result; the mean
        squared TD error is the epoch's train/loss."""
        updated = self.q_table.tolist()  # Q⁺, as floats
        columns = [batch[key].tolist() for key in ("state", "action", "reward", "next_state", "terminated")]
        squared = [q_learning_update(updated, *move, self.alpha, self.gamma) ** 2 for move in zip(*columns)]
        optimizer = self.optimizers()
        optimizer.zero_grad()
        target = torch.tensor(updated, dtype=self.q_table.dtype, device=self.q_table.device)  # Q⁺, beside the table
        self.manual_backward(0.5 * (self.q_table - target).pow(2).sum())
        optimizer.step()
        return torch.tensor(sum(squared) / len(squared), device=self.device)

    def exact_test_metrics(self) -> dict[str, float]:
        """The greedy policy's exact value from the start, and the optimum's, on the environment's model."""
        transitions, rewards, start = environment_model(self.environment)
        optimal_values, _ = value_iteration(transitions, rewards, self.gamma)
        policy = self.q_table.detach().cpu().argmax(dim=1)  # as act_greedy: the first maximizing action
        values = policy_evaluation(transitions, rewards, policy, self.gamma)
        return {"test/policy_value": float(start @ values), "test/optimal_value": float(start @ optimal_values)}


MODEL = TabularQLearning
