"""Train a tokenizer with accelerate. Copy and adapt freely.

    # one CPU process, the small Fashion-MNIST FVQ preset
    python examples/train_tokenizer.py --preset cpu-fmnist-fvq --output-dir outputs/fvq-fmnist
    # any accelerate set-up (multi-GPU, multi-node, FSDP/DeepSpeed come from `accelerate config`)
    accelerate launch examples/train_tokenizer.py --preset fvq-16k --dataset ILSVRC/imagenet-1k --streaming true
    # fine-tune a released tokenizer on your images
    accelerate launch examples/train_tokenizer.py --preset fvq-16k --init-from org/fvq-16k \
        --dataset imagefolder --data-dir my_images --max-steps 5000
    # resume exactly where a run stopped
    accelerate launch examples/train_tokenizer.py --config my_run.yaml --resume latest

Every option of ``TokenizerTrainingConfig`` is a flag (``--codebook-size 65536``); ``--config`` reads YAML/JSON.
"""

import sys

from fullvq_hf.training.tokenizer_trainer import main

if __name__ == "__main__":
    sys.exit(main())
