"""smooth-GAN (SPEC §5, paper §2.3): the trainable blender of InsMix's pasted nuclei.

* :class:`Generator` — gated-conv encoder–decoder with a dilated branch and the
  Foreground Similarity Encoder (:class:`FSE`, Eq. 6–7);
  :class:`Discriminator` — 70×70 PatchGAN with spectral norm.
* :mod:`~insmix_fast.gan.losses` — triplet (Eq. 3), adversarial (Eq. 4), generator (Eq. 5)
  losses and the official BCE variant.
* :func:`train` / :class:`GanTrainConfig` — training on pasted tiles (``insmix-fast gan train``).
* :func:`export_blender` / :func:`load_blender` — TorchScript ``.pt`` and ``torch.export``
  ``.pt2`` artefacts (``insmix-fast gan export``).
* :class:`Blender` — ``blend(images, paste_mask, original_mask)`` on the batch's device.
"""

from .blender import Blender
from .export import BlendModule, export_blender, load_blender, load_generator
from .losses import adversarial_loss, generator_loss, triplet_loss
from .model import FSE, Discriminator, GatedConv2d, Generator, composite
from .train import GanTrainConfig, TrainResult, train

__all__ = [
    "Blender", "BlendModule", "Discriminator", "FSE", "GatedConv2d", "Generator", "GanTrainConfig", "TrainResult",
    "adversarial_loss", "composite", "export_blender", "generator_loss", "load_blender", "load_generator",
    "train", "triplet_loss",
]
