"""Training pieces for the tokenizers: learning-rate schedules (``schedules``) and the losses around the
reconstruction, i.e. the PatchGAN discriminator, GAN losses, the adaptive GAN weight and the LPIPS-style
perceptual loss (``losses``)."""
