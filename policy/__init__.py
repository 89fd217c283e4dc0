"""The decision core shared by the simulator, the operator and the tests.

Everything that decides how a Deployment is scaled lives here, as pure functions over
numpy arrays and small frozen models. The package imports nothing else of rlscale and
needs only numpy, onnxruntime and pydantic, so the operator image carries no torch.

Public surface:

* :mod:`~rlscale.policy.spec` — the observation spec (ordered, named features) and its hash;
* :mod:`~rlscale.policy.actions` — the composite action table;
* :mod:`~rlscale.policy.limits` — the hard limits a user sets;
* :mod:`~rlscale.policy.mask` — the safety mask and the final clamp;
* :mod:`~rlscale.policy.baselines` — the HPA v2 algorithm, a static and a proportional policy;
* :mod:`~rlscale.policy.model` — the ONNX runner and model metadata;
* :mod:`~rlscale.policy.gate` — the gradual-rollout gate;
* :mod:`~rlscale.policy.reward` — the multi-objective reward;
* :mod:`~rlscale.policy.decide` — the one decision function, and its batch form for many controllers.
"""

from rlscale.policy.actions import ACTIONS, NOOP, Action
from rlscale.policy.baselines import BaselineConfig, HpaConfig, HpaState
from rlscale.policy.decide import ControllerState, Decision, DecisionConfig, Observation, decide, decide_batch
from rlscale.policy.gate import GateConfig, GateState
from rlscale.policy.limits import ScalingLimits
from rlscale.policy.mask import MaskRule
from rlscale.policy.model import ModelMismatchError, PolicyModel
from rlscale.policy.reward import Objective, RewardWeights
from rlscale.policy.spec import FEATURES, SPEC_HASH, Feature

__all__ = [
    "ACTIONS",
    "FEATURES",
    "NOOP",
    "SPEC_HASH",
    "Action",
    "BaselineConfig",
    "ControllerState",
    "Decision",
    "DecisionConfig",
    "Feature",
    "GateConfig",
    "GateState",
    "HpaConfig",
    "HpaState",
    "MaskRule",
    "ModelMismatchError",
    "Objective",
    "Observation",
    "PolicyModel",
    "RewardWeights",
    "ScalingLimits",
    "decide",
    "decide_batch",
]
