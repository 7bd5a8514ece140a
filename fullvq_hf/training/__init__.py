"""Training pieces: the tokenizer trainer (``tokenizer_trainer``, options in ``config``), learning-rate schedules
(``schedules``), the losses around the reconstruction, i.e. the PatchGAN discriminator, GAN losses, the adaptive GAN
weight and the LPIPS-style perceptual loss (``losses``); the LlamaGen generator's data (``codes``: images -> token
grids) and trainer (``llamagen_trainer``); and what both trainers share (``common``: accelerate set-up, EMA,
atomic checkpoints with exact resume, image grids)."""
