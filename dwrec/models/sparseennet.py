"""SparseEnNet (Chen et al., AAAI 2024, "Sparse Enhanced Network: An Adversarial
Generation Method for Robust Augmentation in Sequential Recommendation"), on dwrec's
SASRec encoder. The paper has no public code; see docs/models.md for what is dwrec's own.

Per training step, besides the next-item loss of the original sequence (dwrec's loss path,
so domain weighting applies): two views of every input row, each made by an augmentation
drawn uniformly from {crop, mask, reorder, replace}, go through the same encoder. The
auxiliary loss is

    cl_weight * NT-Xent(view 1, view 2; temperature)            (CL4SRec's contrastive term)
  + adv_weight * CE(discriminator(GRL(z)), augmentation of z)   (z: original, view 1, view 2)

with ``z`` the state at the last position and GRL a gradient reversal layer: the
discriminator learns which augmentation (or none, for the original) produced a
representation, while the encoder receives the reversed gradient and so learns
representations from which the augmentation cannot be told (robust to it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dwrec.errors import UsageError
from dwrec.models import augment
from dwrec.models.base import ModelConfig
from dwrec.models.layers import init_small_normal
from dwrec.models.registry import register
from dwrec.models.sasrec import SASRec


@dataclass
class SparseEnNetConfig(ModelConfig):
    crop_keep: float = field(
        default=0.6, metadata={"help": "crop keeps max(1, floor(crop_keep * n)) of n items"}
    )
    aug_mask_prob: float = field(
        default=0.3, metadata={"help": "mask replaces each item by the mask token with this prob"}
    )
    reorder_share: float = field(
        default=0.6, metadata={"help": "reorder shuffles a run of floor(reorder_share * n) items"}
    )
    replace_prob: float = field(
        default=0.3, metadata={"help": "replace swaps each item for a random item with this prob"}
    )
    cl_weight: float = field(
        default=0.02, metadata={"help": "weight of the contrastive (NT-Xent) term between views"}
    )
    temperature: float = field(default=1.0, metadata={"help": "NT-Xent temperature"})
    cosine: bool = field(
        default=False, metadata={"help": "NT-Xent on cosines (false: dot products, as CL4SRec)"}
    )
    adv_weight: float = field(
        default=0.1, metadata={"help": "weight of the augmentation discriminator's loss"}
    )
    reversal: float = field(
        default=1.0, metadata={"help": "gradient reversal scale into the encoder"}
    )


@register
class SparseEnNet(SASRec):
    """SASRec's encoder and scores, trained with augmented views, a contrastive term and an
    adversarial augmentation discriminator (ranking is SASRec's)."""

    name = "sparseennet"
    config_class: ClassVar = SparseEnNetConfig
    supports_multiprocess: ClassVar[bool] = False
    deviation: ClassVar[str] = (
        "no public code: built on dwrec's SASRec encoder from the paper's description; "
        "constants the paper does not give chosen on ML-100K validation (docs/models.md)"
    )

    def __init__(self, n_items: int, config: ModelConfig):
        config = augment.model_config(config, SparseEnNetConfig)
        super().__init__(n_items, config)
        for name in ("crop_keep", "reorder_share"):
            if not 0.0 < getattr(config, name) <= 1.0:
                raise UsageError(f"sparseennet {name} {getattr(config, name)} must lie in (0, 1]")
        for name in ("aug_mask_prob", "replace_prob"):
            if not 0.0 <= getattr(config, name) <= 1.0:
                raise UsageError(f"sparseennet {name} {getattr(config, name)} must lie in [0, 1]")
        if config.temperature <= 0.0:
            raise UsageError(f"sparseennet temperature {config.temperature} must be positive")
        self.mask_token = n_items + 1
        # one more row than SASRec's table: the mask token of the mask augmentation
        self.item_embedding = nn.Embedding(n_items + 2, config.hidden, padding_idx=0)
        classes = 1 + len(augment.AUGMENTATIONS)  # "none" (the original) + the four
        self.discriminator = nn.Sequential(
            nn.Linear(config.hidden, config.hidden), nn.ReLU(), nn.Linear(config.hidden, classes)
        )
        self.apply(init_small_normal)

    def views(
        self, inputs: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Two augmented views of ``inputs [B, L]`` and their augmentation indices ``[B]``."""
        config = self.config
        batch = inputs.shape[0]
        count = len(augment.AUGMENTATIONS)
        kinds = torch.randint(0, count, (2, batch), generator=generator, device=generator.device)
        options = dict(
            crop_keep=config.crop_keep,
            mask_prob=config.aug_mask_prob,
            reorder_share=config.reorder_share,
            replace_prob=config.replace_prob,
            mask_token=self.mask_token,
            n_items=self.n_items,
            generator=generator,
        )
        first = augment.augment(inputs, kinds[0], **options)
        second = augment.augment(inputs, kinds[1], **options)
        return first, second, kinds[0].to(inputs.device), kinds[1].to(inputs.device)

    def auxiliary_loss(self, inputs, targets, hidden, generator):
        config = self.config
        if config.cl_weight == 0.0 and config.adv_weight == 0.0:
            return None
        first, second, kind_1, kind_2 = self.views(inputs, generator)
        both = self.forward(torch.cat([first, second], dim=0))[:, -1]  # [2B, d]
        z_1, z_2 = both.chunk(2, dim=0)
        original = hidden[:, -1]
        loss = config.cl_weight * augment.nt_xent(z_1, z_2, config.temperature, config.cosine)
        states = torch.cat([original, z_1, z_2], dim=0)
        labels = torch.cat([torch.zeros_like(kind_1), kind_1 + 1, kind_2 + 1])
        logits = self.discriminator(augment.reverse_gradient(states, config.reversal))
        return loss + config.adv_weight * F.cross_entropy(logits.float(), labels)
