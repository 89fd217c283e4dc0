"""Training hyperparameters: every knob of :mod:`rlscale.training.ppo` and :mod:`rlscale.training.train`
in one frozen pydantic model.

Kept apart from the training loop so that a config file can be validated (and its errors
reported by field name) without importing torch, and so that the exact values are written
into the exported model's metadata verbatim.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlscale.training.sim_config import MultiplierRange, SimConfig


class SloConstraint(BaseModel):
    """The SLO as a constraint (Lagrangian PPO) instead of a weighted penalty.

    The policy is trained on ``−cost − λ·violated − change penalties`` and the multiplier
    λ follows the constraint by dual ascent after every update: up when the rollout's share
    of SLO-violating intervals exceeds ``violation_rate``, down when it is below. So the
    policy minimises cost *subject to* a violation budget rather than at a fixed exchange
    rate, the question cost-at-matched-SLO asks (docs/evaluation.md).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    violation_rate: float = Field(0.01, gt=0, lt=1, description="Allowed share of intervals that break the SLO.")
    lambda_init: float = Field(5.0, gt=0, description="Initial penalty per violating interval.")
    lambda_lr: float = Field(0.02, gt=0, le=1, description="Dual step, in log-space, per update.")
    lambda_max: float = Field(200.0, gt=0)
    cost_per_core: float = Field(0.05, gt=0, description="Reward cost of one allocated CPU core for one interval.")
    replica_change: float = Field(0.02, ge=0, description="Penalty for an interval whose replica count changed.")
    limit_change: float = Field(0.2, ge=0, description="Penalty for a limit change (it restarts pods).")


class PpoConfig(BaseModel):
    """The clipped-objective PPO of CleanRL's ``ppo.py``, with invalid-action masking.

    Defaults were chosen on the training/validation windows only (see docs/training.md).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    total_steps: int = Field(4_000_000, ge=1, description="Environment steps over all parallel environments.")
    n_envs: int = Field(32, ge=1, le=4096, description="Parallel simulated workloads per rollout.")
    n_steps: int = Field(128, ge=1, description="Steps per environment in one rollout.")
    learning_rate: float = Field(3e-4, gt=0, lt=1)
    anneal_lr: bool = Field(True, description="Decay the learning rate linearly to 0 over training.")
    gamma: float = Field(0.98, gt=0, le=1, description="Discount per decision interval.")
    gae_lambda: float = Field(0.95, ge=0, le=1)
    n_minibatches: int = Field(4, ge=1)
    update_epochs: int = Field(4, ge=1)
    norm_adv: bool = Field(True, description="Normalise advantages per minibatch.")
    norm_reward: bool = Field(
        True,
        description="Divide rewards by a running std of the discounted return (gymnasium's NormalizeReward), so value "
        "targets stay O(1) whatever the reward weights.",
    )
    clip_coef: float = Field(0.2, gt=0, lt=1)
    clip_vloss: bool = Field(
        False,
        description="Clip the value loss like the policy ratio (off: returns are not normalised, "
        "so a ±clip_coef step per update would stall the critic).",
    )
    ent_coef: float = Field(0.01, ge=0, description="Entropy bonus at the start of training.")
    ent_coef_final: float | None = Field(
        0.001,
        ge=0,
        description="Anneal the entropy bonus linearly to this by the end (None: constant). The operator acts on "
        "the argmax, so a policy that ends training near-deterministic is the one that gets evaluated.",
    )
    temperature_final: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Anneal the policy's softmax temperature linearly from 1 to this over training (None: 1). The "
        "operator acts on the argmax; a cooler policy at the end of training is trained to be good *as* a "
        "near-deterministic policy instead of relying on random dithering. The logits, and so the argmax, are "
        "exported unchanged.",
    )
    vf_coef: float = Field(0.5, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    target_kl: float | None = Field(None, gt=0, description="Stop an update early past this approximate KL.")
    hidden: tuple[int, ...] = Field((64, 64), min_length=1, description="Hidden layer widths (actor and critic).")
    context_size: int = Field(
        0,
        ge=0,
        le=256,
        description="Width of the gated context encoder (memory) that actor and critic read instead of the bare "
        "observation; 0 = no encoder (a feed-forward policy). The exported model then maps (obs, context_in) to "
        "(logits, context_out).",
    )
    seq_len: int = Field(
        16,
        ge=1,
        description="With an encoder: the update recomputes the context over sequences of this many steps, from the "
        "context stored at each sequence's start (truncated back-propagation through time).",
    )
    torch_threads: int = Field(
        1, ge=1, le=64, description="Intra-op threads; the nets are tiny, so one thread beats contention."
    )
    checkpoint_every: int = Field(25, ge=0, description="Save a checkpoint every this many updates (0: only at end).")
    slo_constraint: SloConstraint | None = Field(
        None,
        description="Train on cost subject to an SLO-violation budget (Lagrangian) instead of the env's reward; "
        "None trains on the env's weighted reward. The default training config sets it.",
    )

    @model_validator(mode="after")
    def _batch_divides(self) -> PpoConfig:
        if self.batch_size % self.n_minibatches:
            raise ValueError(f"n_minibatches ({self.n_minibatches}) must divide n_envs × n_steps ({self.batch_size})")
        if self.context_size:
            if self.n_steps % self.seq_len:
                raise ValueError(f"seq_len ({self.seq_len}) must divide n_steps ({self.n_steps}) with an encoder")
            if self.n_sequences % self.n_minibatches:
                raise ValueError(
                    f"n_minibatches ({self.n_minibatches}) must divide the {self.n_sequences} sequences of a rollout"
                )
        return self

    @property
    def n_sequences(self) -> int:
        """Sequences of ``seq_len`` steps in one rollout (what the recurrent update shuffles)."""
        return self.n_envs * (self.n_steps // self.seq_len)

    @property
    def batch_size(self) -> int:
        return self.n_envs * self.n_steps

    @property
    def minibatch_size(self) -> int:
        return self.batch_size // self.n_minibatches

    @property
    def n_updates(self) -> int:
        return max(1, self.total_steps // self.batch_size)


class WarmStartConfig(BaseModel):
    """Start PPO from a policy that imitates the HPA (behaviour cloning), then improve on it.

    PPO from a random policy spends most of its budget rediscovering proportional scaling,
    and its stochastic policy relies on random scale-downs that the operator's argmax never
    makes. Cloning the HPA algorithm (a conventional teacher, run on the generated training
    load only) gives PPO a sharp, sensible starting point; the critic is trained alone for
    ``critic_only_updates`` updates so that early, uninformed advantages cannot undo it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    teacher_target_utilization: float = Field(0.5, gt=0, le=1, description="The imitated HPA's target.")
    steps: int = Field(131_072, ge=1, description="Environment steps of teacher rollouts collected for cloning.")
    n_envs: int = Field(64, ge=1, description="Parallel environments for the teacher rollouts.")
    epochs: int = Field(10, ge=1, description="Passes over the cloned data.")
    batch_size: int = Field(1024, ge=1)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    critic_only_updates: int = Field(10, ge=0, description="PPO updates with the actor frozen, at the start.")


class DataConfig(BaseModel):
    """Which load series training sees (:func:`rlscale.training.workloads.training_mix`).

    The default is the project's own generated load only. ``extra_traces`` adds the
    chronological *training* windows of trace files; their validation and test windows are
    never read, so they remain fair to evaluate on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, ge=0, description="Seed of the generated series (independent of the PPO seed).")
    n_generated: int = Field(28, ge=0, description="Generated series, cycling through the patterns.")
    n_steps: int = Field(7 * 1440, ge=2, description="Minutes per generated series.")
    patterns: tuple[str, ...] | None = Field(None, description="Generator patterns; None = all of them.")
    extra_traces: tuple[str, ...] = Field((), description="Trace files whose training windows are added.")

    @model_validator(mode="after")
    def _some_data(self) -> DataConfig:
        if self.n_generated == 0 and not self.extra_traces:
            raise ValueError("n_generated is 0 and no extra_traces are given: there would be no training data")
        return self


class TrainConfig(BaseModel):
    """One training run, fully: PPO hyperparameters, the simulated service, the data and the seed.

    This whole document (plus the data's provenance) is written into the exported model,
    so a model can be retrained bit for bit from its own metadata.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds torch, numpy and the simulator.")
    ppo: PpoConfig = Field(
        default_factory=lambda: PpoConfig(slo_constraint=SloConstraint()),
        description="PPO; by default with the SLO as a constraint (docs/training.md: it beat the weighted reward on "
        "the validation windows).",
    )
    sim: SimConfig = Field(
        default_factory=lambda: SimConfig(load_scale_range=(0.6, 1.8)),
        description="The simulated service. Training draws each episode's load multiplier from 0.6-1.8x (evaluation "
        "uses 1x): a test period busier than anything in training is the rule, not the exception.",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    warm_start: WarmStartConfig | None = Field(
        default_factory=WarmStartConfig,
        description="Clone an HPA teacher (on the generated training load) before PPO; None starts PPO from a random "
        "policy.",
    )


class FineTuneConfig(BaseModel):
    """Continue PPO from a trained model on one workload's training window (:mod:`rlscale.training.finetune`).

    Everything else — the simulated service, γ, λ, clipping, minibatches, the network's
    widths — comes from the init model's own training config, so a fine-tune changes the
    data and the step size, not the problem. Defaults and why are in docs/training.md
    ("Fine-tuning on one workload").
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    total_steps: int = Field(
        1_048_576, ge=1, description="Environment steps planned (the learning rate anneals over these)."
    )
    minutes: float = Field(
        5.0,
        gt=0,
        description="Wall-clock budget; PPO stops after the update that crosses it (checked between updates)",
    )
    learning_rate: float = Field(
        1e-4, gt=0, lt=1, description="Peak learning rate, a third of training's: a nudge to a good policy, not a redo."
    )
    ent_coef: float = Field(
        0.001,
        ge=0,
        description="Constant entropy bonus: training's final value. Restarting at training's initial 0.01 would push "
        "the sharp, argmax-ready policy back towards uniform.",
    )
    critic_warmup_updates: int = Field(
        20, ge=0, description="First updates train only the fresh critic (the ONNX file holds no critic)."
    )
    trace_share: float = Field(
        0.75,
        gt=0,
        le=1,
        description="Share of episodes drawn from the trace's training window; the rest replay the generated mix, so "
        "that load shapes the window lacks (surges, ramps) are not forgotten.",
    )
    n_generated: int = Field(7, ge=0, description="Generated series (one per pattern) in the rest.")
    violation_rate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="This workload's SLO budget (share of intervals allowed to violate) for a model trained with the "
        "SLO as a constraint; None keeps the init model's (the generated mix's 1 %).",
    )
    load_scale_range: MultiplierRange | None = Field(
        None,
        description="Per-episode load multiplier range for this workload's episodes; None keeps the init model's "
        "(0.6-1.8x by default).",
    )

    @model_validator(mode="after")
    def _generated_if_shared(self) -> FineTuneConfig:
        if self.trace_share < 1 and self.n_generated == 0:
            raise ValueError("trace_share < 1 needs n_generated > 0 (the rest of the episodes are generated load)")
        return self
