"""Flax Linen models for the paper's experiments (needs the ``train`` extra: flax).

Every model is an ``nn.Module`` with the fields ``num_classes``, ``head`` ("linear" or
"cosine"), ``dtype`` (computation dtype; parameters stay ``param_dtype``, float32) and
``axis_name`` (for global BatchNorm statistics under pmap / shard_map), called as
``model.apply(variables, x, train=...)`` on NHWC images (or (B, ...) arrays for the MLP).
BatchNorm follows PyTorch's defaults and keeps its running statistics in the
``"batch_stats"`` collection, beside ``"params"``.

=============  =====================================================  ================
name           model                                                  LB (last block)
=============  =====================================================  ================
``resnet8``    CIFAR ResNet, n = 1 (:mod:`.resnet_cifar`)             ``stage3_block1``
``resnet20``   CIFAR ResNet, n = 3                                    ``stage3_block3``
``resnet32``   CIFAR ResNet, n = 5 (the paper's CIFAR model)          ``stage3_block5``
``resnet18``   ImageNet-style ResNet, basic blocks (:mod:`.resnet`)   ``stage4_block2``
``resnet34``   ImageNet-style ResNet, basic blocks                    ``stage4_block3``
``resnet50``   ImageNet-style ResNet, bottlenecks                     ``stage4_block3``
``resnet152``  ImageNet-style ResNet, bottlenecks                     ``stage4_block3``
``cnn4``       the SCE paper's CNN for noisy CIFAR-10 (:mod:`.cnn`)   ``block4``
``mlp``        digits MLP (:mod:`.mlp`)                               ``block2``
=============  =====================================================  ================

The classifier is always ``params["head"]``; :func:`trainable_mask` builds the optax masks
that freeze all but the head ("fc") or all but the head and the last block ("fc+lb").
:func:`load_pretrained` loads torchvision / timm ImageNet weights into the ImageNet ResNets
(:mod:`.pretrained`).
"""

from absgd_jax.models.blocks import BasicBlock, Bottleneck
from absgd_jax.models.cnn import CNN4, cnn4
from absgd_jax.models.freezing import MASK_CHOICES, last_block_name, trainable_mask
from absgd_jax.models.heads import HEAD_KINDS, CosineClassifier, classifier_head
from absgd_jax.models.mlp import MLP, mlp
from absgd_jax.models.pretrained import (
  flax_to_torch_state_dict,
  load_pretrained,
  read_state_dict,
  torch_state_dict_to_flax,
)
from absgd_jax.models.registry import MODEL_NAMES, create_model
from absgd_jax.models.resnet import (
  ResNet,
  resnet18,
  resnet34,
  resnet50,
  resnet101,
  resnet152,
)
from absgd_jax.models.resnet_cifar import CifarResNet, resnet8, resnet20, resnet32

__all__ = [
  "BasicBlock",
  "Bottleneck",
  "CNN4",
  "CifarResNet",
  "CosineClassifier",
  "HEAD_KINDS",
  "MASK_CHOICES",
  "MLP",
  "MODEL_NAMES",
  "ResNet",
  "classifier_head",
  "cnn4",
  "create_model",
  "flax_to_torch_state_dict",
  "last_block_name",
  "load_pretrained",
  "mlp",
  "read_state_dict",
  "resnet8",
  "resnet18",
  "resnet20",
  "resnet32",
  "resnet34",
  "resnet50",
  "resnet101",
  "resnet152",
  "torch_state_dict_to_flax",
  "trainable_mask",
]
