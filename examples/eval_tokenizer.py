"""Evaluate a tokenizer on a dataset split: exact usage, perplexity, PSNR, SSIM, Frechet distance.

    python examples/eval_tokenizer.py --model outputs/fvq-fmnist/model --dataset fashion_mnist --split test \
        --feature-extractor fashion-mnist-classifier --output outputs/fvq-fmnist/eval.json
"""

from fullvq_hf.evaluation.tokenizer_eval import main

if __name__ == "__main__":
    main()
