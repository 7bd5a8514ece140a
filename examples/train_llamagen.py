"""Train LlamaGen's class-to-image GPT on a codes dataset with accelerate. Copy and adapt freely.

    # 1. tokenize the images once (see examples/extract_codes.py)
    python examples/extract_codes.py --tokenizer runs/fmnist/model --dataset fashion_mnist --augment flip \
        --output-dir runs/fmnist-codes
    # 2. one CPU process, the small Fashion-MNIST preset; sample grids decoded with the tokenizer
    python examples/train_llamagen.py --preset cpu-fmnist-gpt --codes runs/fmnist-codes \
        --tokenizer runs/fmnist/model --output-dir runs/fmnist-gpt
    # LlamaGen GPT-B on ImageNet codes, any accelerate set-up
    accelerate launch examples/train_llamagen.py --preset c2i-gpt-b --codes runs/imagenet256-codes
    # resume exactly where a run stopped
    accelerate launch examples/train_llamagen.py --config runs/fmnist-gpt/training_config.json --resume latest

Every option of ``LlamaGenTrainingConfig`` is a flag (``--hidden-size 256``); ``--config`` reads YAML/JSON.
"""

import sys

from fullvq_hf.training.llamagen_trainer import main

if __name__ == "__main__":
    sys.exit(main())
