"""The ONNX runner: load a policy model, check it was built for this spec, return logits.

A model may have memory: then it takes the context it returned last time as a second input
and returns the next one (:attr:`PolicyModel.context_size` > 0). The caller keeps the
context (``policy/decide.py`` in the controller state, which the operator persists).

A model carries its contract in the ONNX metadata: the spec hash, the action table and
the observation feature names, plus training provenance. A file that lacks them, or was
built for another spec, is refused with :class:`ModelMismatchError`; the caller then lets
the baseline act. The session runs with one intra-op and one inter-op thread and no
spinning: a decision is a tiny matrix product, and spinning threads would burn a core
per policy in the operator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from rlscale.policy.actions import N_ACTIONS, action_table
from rlscale.policy.spec import FEATURE_NAMES, N_FEATURES, SPEC_HASH

#: ONNX input and output names of every rlscale policy model.
INPUT_NAME = "obs"
OUTPUT_NAME = "logits"
#: … and of a model with memory (a context encoder), which also maps the context it was
#: given to the next one: ``(obs, context_in) → (logits, context_out)``.
CONTEXT_INPUT_NAME = "context_in"
CONTEXT_OUTPUT_NAME = "context_out"

META_SPEC_HASH = "rlscale.spec_hash"
META_ACTIONS = "rlscale.action_table"
META_FEATURES = "rlscale.features"
META_TRAINING = "rlscale.training"

#: Where the default model shipped in the package lives.
DEFAULT_MODEL_PATH = Path(__file__).with_name("models") / "default.onnx"


class ModelMismatchError(ValueError):
    """The model file is unreadable or was built for another observation/action contract."""


def model_metadata(training: Mapping[str, Any]) -> dict[str, str]:
    """The metadata an exporter must write so that :class:`PolicyModel` accepts the model."""
    return {
        META_SPEC_HASH: SPEC_HASH,
        META_ACTIONS: json.dumps(action_table(), sort_keys=True),
        META_FEATURES: json.dumps(list(FEATURE_NAMES)),
        META_TRAINING: json.dumps(dict(training), sort_keys=True, default=str),
    }


def masked_argmax(logits: npt.NDArray[np.float32], allowed: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """The best allowed action per row; ties go to the lowest index, so the result is deterministic.

    The no-op (column 0) is always allowed, so a row is never empty.
    """
    masked = np.where(allowed, logits, -np.inf)
    best: npt.NDArray[np.int64] = np.argmax(masked, axis=-1).astype(np.int64)
    return best


class PolicyModel:
    """A loaded, checked policy model."""

    def __init__(
        self, session: ort.InferenceSession, metadata: Mapping[str, str], source: str, data: bytes = b""
    ) -> None:
        self._session = session
        self.metadata = dict(metadata)
        self.source = source
        #: The ONNX file's bytes, kept so that a loaded model can be fine-tuned or re-hashed
        #: (an onnxruntime session does not give its weights back); tens of KB.
        self.data = data
        self.training: dict[str, Any] = json.loads(metadata.get(META_TRAINING, "{}"))
        inputs = {i.name: i.shape for i in session.get_inputs()}
        #: Width of the model's context (its memory); 0 for a feed-forward model.
        self.context_size: int = int(inputs[CONTEXT_INPUT_NAME][-1]) if CONTEXT_INPUT_NAME in inputs else 0
        self._outputs = [OUTPUT_NAME, CONTEXT_OUTPUT_NAME] if self.context_size else [OUTPUT_NAME]

    @property
    def trained_interval_s(self) -> float | None:
        """Seconds between the decisions the model was trained on (its simulator's ``step_s``); None if unrecorded.

        A model decides one move per interval, and its moves are sized for the interval it
        learnt at: run at a much shorter one, it moves several times where it learnt to move
        once (docs/training.md, "The decision interval"). The operator says so in status.
        """
        config = self.training.get("config")
        sim = config.get("sim") if isinstance(config, dict) else None
        step = sim.get("step_s") if isinstance(sim, dict) else None
        return float(step) if isinstance(step, int | float) and not isinstance(step, bool) and step > 0 else None

    @classmethod
    def load(cls, path: str | Path) -> PolicyModel:
        """Load a model file; raises :class:`ModelMismatchError` with the reason on any problem."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ModelMismatchError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
        return cls.from_bytes(data, source=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> PolicyModel:
        """Load a model from bytes (e.g. a ConfigMap's binaryData) and check its contract."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ModelMismatchError(f"model {source} is not a valid ONNX model: {exc}") from exc
        meta = dict(session.get_modelmeta().custom_metadata_map)
        cls._check(meta, session, source)
        return cls(session, meta, source, data)

    @staticmethod
    def _check(meta: Mapping[str, str], session: ort.InferenceSession, source: str) -> None:
        got = meta.get(META_SPEC_HASH)
        if got is None:
            raise ModelMismatchError(f"model {source} has no {META_SPEC_HASH} metadata; not an rlscale policy")
        if got != SPEC_HASH:
            raise ModelMismatchError(
                f"model {source} was built for spec {got}, this rlscale uses spec {SPEC_HASH}; "
                "retrain or export it for this version"
            )
        try:
            actions = json.loads(meta.get(META_ACTIONS, "null"))
        except json.JSONDecodeError as exc:
            raise ModelMismatchError(f"model {source} has an unreadable action table: {exc}") from exc
        if actions != action_table():
            raise ModelMismatchError(f"model {source} has a different action table than this rlscale")
        inputs = {i.name: i.shape for i in session.get_inputs()}
        outputs = {o.name: o.shape for o in session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ModelMismatchError(
                f"model {source} must have input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                f"has {sorted(inputs)} → {sorted(outputs)}"
            )
        if inputs[INPUT_NAME][-1] not in (N_FEATURES, None) or not isinstance(inputs[INPUT_NAME][-1], int | None):
            raise ModelMismatchError(f"model {source} expects {inputs[INPUT_NAME][-1]} features, spec has {N_FEATURES}")
        if outputs[OUTPUT_NAME][-1] != N_ACTIONS:
            raise ModelMismatchError(f"model {source} outputs {outputs[OUTPUT_NAME][-1]} logits, spec has {N_ACTIONS}")
        extra = set(inputs) - {INPUT_NAME}
        if extra not in (set(), {CONTEXT_INPUT_NAME}):
            raise ModelMismatchError(f"model {source} has unknown inputs {sorted(extra)}")
        if CONTEXT_INPUT_NAME in inputs:
            width_in = inputs[CONTEXT_INPUT_NAME][-1]
            width_out = outputs.get(CONTEXT_OUTPUT_NAME, [None])[-1]
            if not isinstance(width_in, int) or width_in <= 0 or width_out != width_in:
                raise ModelMismatchError(
                    f"model {source} takes a context of width {width_in} but returns "
                    f"{'none' if CONTEXT_OUTPUT_NAME not in outputs else f'one of width {width_out}'}"
                )

    def logits(self, obs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Logits of shape ``(n, N_ACTIONS)`` for observations of shape ``(n, N_FEATURES)``.

        A model with memory is run from an empty context (what it knows on its first decision).
        """
        return self.step(obs)[0]

    def step(
        self, obs: npt.NDArray[np.float32], context: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Logits ``(n, N_ACTIONS)`` and the next context ``(n, context_size)``.

        ``context`` is what the previous step returned (``None``: an empty one, zeros). A
        feed-forward model ignores it and returns a context of width 0.
        """
        obs = np.ascontiguousarray(obs, dtype=np.float32)
        feeds = {INPUT_NAME: obs}
        if self.context_size:
            if context is None:
                context = np.zeros((len(obs), self.context_size), dtype=np.float32)
            feeds[CONTEXT_INPUT_NAME] = np.ascontiguousarray(context, dtype=np.float32)
        out = self._session.run(self._outputs, feeds)
        logits = np.asarray(out[0], dtype=np.float32)
        if not self.context_size:
            return logits, np.zeros((len(obs), 0), dtype=np.float32)
        return logits, np.asarray(out[1], dtype=np.float32)


def load_default_model() -> PolicyModel:
    """The model shipped in the package (trained by ``make model``)."""
    return PolicyModel.load(DEFAULT_MODEL_PATH)
