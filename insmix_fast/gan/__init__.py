"""smooth-GAN (SPEC §5): generator with gated/dilated convs and the FSE, PatchGAN, losses."""
