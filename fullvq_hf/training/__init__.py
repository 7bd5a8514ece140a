"""Training pieces: the one training loop both trainers run (``loop``: accelerate set-up, lr scaling, prepare /
compile, EMA, the accumulate-step-log-checkpoint cycle, checkpoints in JSON/safetensors with checksums and exact
resume, atomic exports, output-folder guard and lock, launch checks), the tokenizer trainer (``tokenizer_trainer``,
options in ``config``), learning-rate schedules (``schedules``), the losses around the reconstruction (``losses``);
the LlamaGen generator's data (``codes``: images -> token grids) and trainer (``llamagen_trainer``)."""
