"""Tokenize an image dataset once, for training a LlamaGen generator. Copy and adapt freely.

    # Fashion-MNIST with a tokenizer trained by examples/train_tokenizer.py, image + mirror image per row pair
    python examples/extract_codes.py --tokenizer runs/fmnist/model --dataset fashion_mnist --augment flip \
        --output-dir runs/fmnist-codes
    # ImageNet with LlamaGen's ten-crop augmentation, sharded over all processes, then pushed to the Hub
    accelerate launch examples/extract_codes.py --tokenizer org/fvq-16k --dataset imagefolder --data-dir imagenet/train \
        --augment ten-crop --output-dir runs/imagenet256-codes --push-to-hub org/imagenet256-fvq16k-codes

The result is a ``datasets`` folder (``load_from_disk``) with ``codes`` / ``label`` / ``image_id`` / ``view`` columns
and ``fullvq_codes.json`` (grid, codebook size, tokenizer, augmentation, classes).
"""

from fullvq_hf.training.codes import main

if __name__ == "__main__":
    main()
