"""Random-weight SmolVLA checkpoints in LeRobot 0.4.4's exact on-disk layout, built offline.

For the demo, benchmarks and tests: the structure (config, tensor names and shapes, processor files, a
weight-less SmolVLM backbone folder with its tokenizer) matches a real checkpoint; the weights are random,
deterministic for a given seed. Command line: ``smolvla-make-checkpoint`` (:mod:`.cli`).
"""

from .backbone import SMOLVLM2_500M, TINY_BACKBONE, BackboneSpec, backbone_config
from .checkpoint import (
    REAL_SIZE_PARAMETERS,
    SMOLVLA_DEFAULTS,
    image_feature_key,
    make_checkpoint,
    make_real_size_checkpoint,
    make_tiny_checkpoint,
    policy_config,
)
from .cli import main
from .processors import POSTPROCESSOR_STATE_FILE, PREPROCESSOR_STATE_FILE
from .tokenizer import build_tokenizer
from .weights import (
    EXPERT_PREFIX,
    VLM_PREFIX,
    _cross_kv_keys,
    count_parameters,
    expert_intermediate_size,
    random_tensor,
    state_dict_shapes,
    stored_dtype,
    write_safetensors_streaming,
)

__all__ = [
    "EXPERT_PREFIX",
    "POSTPROCESSOR_STATE_FILE",
    "PREPROCESSOR_STATE_FILE",
    "REAL_SIZE_PARAMETERS",
    "SMOLVLA_DEFAULTS",
    "SMOLVLM2_500M",
    "TINY_BACKBONE",
    "VLM_PREFIX",
    "BackboneSpec",
    "_cross_kv_keys",
    "backbone_config",
    "build_tokenizer",
    "count_parameters",
    "expert_intermediate_size",
    "image_feature_key",
    "main",
    "make_checkpoint",
    "make_real_size_checkpoint",
    "make_tiny_checkpoint",
    "policy_config",
    "random_tensor",
    "state_dict_shapes",
    "stored_dtype",
    "write_safetensors_streaming",
]
