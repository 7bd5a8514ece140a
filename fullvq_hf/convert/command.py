"""``fullvq convert NAME SOURCE OUTPUT [--option VALUE ...]``: run one of ``CONVERTERS``.

Options after the two paths become keyword arguments of the converter: ``--use-l2-norm false`` ->
``use_l2_norm=False``, ``--ema`` -> ``ema=True``, ``--block-out-channels 32,64`` -> ``(32, 64)``. Values are read as
bool (true/false), None (none), int, float, comma-separated tuples of those, or else strings.
``fullvq convert NAME --help`` prints the converter's documentation.
"""

from __future__ import annotations

import inspect
import logging
import sys


def _parse_value(text: str):
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(",") if part != "")
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_options(tokens: list[str]) -> dict:
    """``["--a-b", "1", "--flag", "--c=x"]`` -> ``{"a_b": 1, "flag": True, "c": "x"}``."""
    options, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise ValueError(f"Unexpected argument {token!r}: options are written --name value.")
        name, sep, value = token[2:].partition("=")
        if not sep:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value, i = tokens[i + 1], i + 1
            else:
                value = "true"
        options[name.replace("-", "_")] = _parse_value(value)
        i += 1
    return options


def _usage(converters: dict) -> str:
    lines = ["usage: fullvq convert NAME SOURCE OUTPUT [--option VALUE ...]", "", "converters:"]
    for name, function in converters.items():
        summary = (inspect.getdoc(function) or "").splitlines()[0] if function.__doc__ else ""
        lines.append(f"  {name:<20} {summary}")
    lines.append("\n`fullvq convert NAME --help` lists a converter's options.")
    return "\n".join(lines)


def main(argv: list[str], prog: str = "fullvq convert") -> int:
    from . import CONVERTERS

    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(CONVERTERS))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in CONVERTERS:
        print(_usage(CONVERTERS), file=sys.stderr)
        print(f"\n{prog}: unknown converter {name!r}; choose one of {sorted(CONVERTERS)}", file=sys.stderr)
        return 2
    function = CONVERTERS[name]
    if any(arg in ("-h", "--help") for arg in rest):
        print(f"usage: {prog} {name} SOURCE OUTPUT [--option VALUE ...]\n")
        print(inspect.getdoc(function) or "")
        return 0
    if len(rest) < 2 or rest[0].startswith("--") or rest[1].startswith("--"):
        print(f"usage: {prog} {name} SOURCE OUTPUT [--option VALUE ...]", file=sys.stderr)
        return 2
    source, output = rest[0], rest[1]
    try:
        options = parse_options(rest[2:])
        params = inspect.signature(function).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        named = [p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        unknown = [k for k in options if k not in named]
        if unknown and not takes_any:
            raise ValueError(f"Unknown option(s) {unknown} for {name}; options are {named}.")
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
        function(source, output, **options)
    except (ValueError, OSError) as err:  # OSError: FileNotFoundError, an unwritable OUTPUT, ...
        print(f"{prog} {name}: error: {err}", file=sys.stderr)
        return 1
    weights = f" ({options['state_dict_key']!r} weights)" if options.get("state_dict_key") else ""
    weights = " (EMA weights)" if options.get("ema") else weights
    print(f"Converted {source}{weights} -> {output}")
    return 0
