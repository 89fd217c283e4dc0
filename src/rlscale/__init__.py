"""rlscale: a Kubernetes autoscaler whose decisions come from a PPO policy run through ONNX.

The import packages map onto the repository's fixed folders:
``rlscale.policy`` → ``policy/``, ``rlscale.training`` → ``training/``,
``rlscale.operator`` → ``operator/``. This root package holds only the CLI and the
Docker-free local stack used by the demo and the end-to-end tests.
"""

__version__ = "0.1.0"
