"""``fullvq`` command line: ``fullvq train-tokenizer ...``, ``fullvq eval ...``.

Training runs under accelerate like the example script: ``accelerate launch -m fullvq_hf.cli train-tokenizer ...``
(or plain ``fullvq train-tokenizer ...`` for one process).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train-tokenizer": "train a tokenizer (FVQ, VQGAN-LC, VQ, SimVQ)", "eval": "evaluate a tokenizer"}
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
        from .training.config import parse_args
        from .training.tokenizer_trainer import train

        train(parse_args(rest, prog="fullvq train-tokenizer"))
    elif command == "eval":
        from .evaluation.tokenizer_eval import main as eval_main

        eval_main(rest, prog="fullvq eval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
