"""``fullvq`` command line: ``fullvq train-tokenizer ...``, ``fullvq eval ...``, ``fullvq convert ...``.

Training runs under accelerate like the example script: ``accelerate launch -m fullvq_hf.cli train-tokenizer ...``
(or plain ``fullvq train-tokenizer ...`` for one process); so do ``extract-codes`` and ``train-llamagen``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "train-tokenizer": "train a tokenizer (FVQ, VQGAN-LC, VQ, SimVQ)",
        "eval": "evaluate a tokenizer",
        "extract-codes": "tokenize an image dataset into a codes dataset (for train-llamagen)",
        "train-llamagen": "train a LlamaGen class-to-image GPT on a codes dataset",
        "convert": "convert an official checkpoint (LlamaGen VQ and GPT, FVQ, VQGAN-LC)",
        "push": "push a training run or model folder to the Hub in one commit, with a model card",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: fullvq <command> [options]\n\ncommands:")
        for name, text in commands.items():
            print(f"  {name:<16} {text}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nfullvq: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train-tokenizer":
        from .training.tokenizer_trainer import main as train_main

        return train_main(rest, prog="fullvq train-tokenizer")
    elif command == "eval":
        from .evaluation.tokenizer_eval import main as eval_main

        eval_main(rest, prog="fullvq eval")
    elif command == "extract-codes":
        from .training.codes import main as extract_main

        extract_main(rest, prog="fullvq extract-codes")
    elif command == "train-llamagen":
        from .training.llamagen_trainer import main as train_llamagen_main

        return train_llamagen_main(rest, prog="fullvq train-llamagen")
    elif command == "convert":
        from .convert.command import main as convert_main

        return convert_main(rest, prog="fullvq convert")
    elif command == "push":
        from .hub import main as push_main

        push_main(rest, prog="fullvq push")
    return 0


if __name__ == "__main__":
    sys.exit(main())
