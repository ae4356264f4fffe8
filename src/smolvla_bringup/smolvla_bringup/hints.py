"""Fix hints in the runner's own syntax: a node's message names a parameter, `smolvla-run` says how to set it.

The nodes phrase their hints with the parameter name (``set calibration_file to ...``, ``parameter 'port'``)
and sometimes in launch syntax (``units_check:=warn``). For `smolvla-run` users such a hint becomes the
runner flag when one sets that parameter (``--calibration-file FILE``, from :data:`graph.ARGUMENTS`), else a
line of a ``--params`` YAML file. ROS-free.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from smolvla_bringup import graph

_STRICT = (
    re.compile(r"parameter '(\w+)'"),  # the ParameterError format
    re.compile(r"\b(\w+):="),  # launch syntax: "units_check:=warn"
)
_LOOSE = (  # prose: only words that are parameters of the node
    re.compile(r"\bparameter `?(\w+)`?"),  # "parameter checkpoint is empty"
    re.compile(r"`(\w+)` parameter"),  # "set the `calibration_file` parameter"
    re.compile(r"\bset (?:the )?`?(\w+)`?"),  # "set units (radians | ...)"
    re.compile(r"\b([a-z]+(?:_[a-z0-9]+)+)\b"),  # "point calibration_file at the right file"
)
_LAUNCH = re.compile(r"\b(\w+):=([^\s,;)\]]*)")


def runner_flag(node: str, parameter: str) -> str | None:
    """The `smolvla-run` flag that sets ``parameter`` of the node named ``node`` (None when there is none)."""
    for argument in graph.ARGUMENTS.values():
        if any(spec.name == node and param == parameter for spec, param in argument.targets):
            return "--" + argument.name.replace("_", "-")
    return None


def _with_placeholder(flag: str) -> str:
    return f"{flag} {flag.rsplit('-', 1)[-1].upper()}"  # --calibration-file FILE, --top-camera CAMERA


def parameters_named(text: str, known: Collection[str] = ()) -> list[str]:
    """Parameter names a message refers to, in order of appearance: ``parameter 'x'`` and ``x:=`` always,
    prose ("set units ...", snake_case words) only for the node's own parameters ``known``."""
    found = [(m.start(), m.group(1)) for pattern in _STRICT for m in pattern.finditer(text)]
    found += [(m.start(), m.group(1)) for p in _LOOSE for m in p.finditer(text) if m.group(1) in known]
    return list(dict.fromkeys(name for _, name in sorted(found)))


def for_runner(node: str, text: str, known: Collection[str] | None = None) -> str:
    """``text`` with launch syntax rewritten and, at the end, how to set each parameter it names with
    `smolvla-run`: ``[smolvla-run: --calibration-file FILE]`` or a ``--params`` YAML line. A message that
    already gives the `smolvla-run` syntax is left as it is."""
    names = parameters_named(text, known or ())
    if not names or "smolvla-run:" in text:
        return text

    def rewrite(match: re.Match) -> str:
        flag = runner_flag(node, match.group(1))
        return f"{flag} {match.group(2)}" if flag else f"{match.group(1)}: {match.group(2)}"

    text = _LAUNCH.sub(rewrite, text)
    flags = [_with_placeholder(runner_flag(node, n)) for n in names if runner_flag(node, n)]
    others = [f"{n}: ..." for n in names if not runner_flag(node, n)]
    if others:
        flags.append(f"--params FILE.yaml holding '/**/{node}: {{ros__parameters: {{{', '.join(others)}}}}}'")
    return f"{text} [smolvla-run: {'; '.join(flags)}]"
