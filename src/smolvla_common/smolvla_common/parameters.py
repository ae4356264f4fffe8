"""Declaring a node's parameters: one set of type rules, one error format, one failure behaviour.

Every node declares its parameters with :func:`declare_parameters` and raises :class:`ParameterError` for a
bad value while it is being built; :func:`~smolvla_common.node_main.run_node` then prints the message
(``<node>: parameter 'rate_hz': expected a number like 30.0, got 'fast'``) and exits with code 2.

Types follow the default: ``bool``; ``int`` (an integral float such as YAML's ``10.0`` is accepted);
``float`` (an int is accepted, so YAML's ``rate: 100`` works); ``str``; a list of the first element's type
(an empty default means a list of strings). Parameters are declared with dynamic typing, so a wrong type
reaches the check here instead of raising inside rclpy.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


class ParameterError(ValueError):
    """A node parameter is missing or invalid; the message names it and says what is expected."""


def invalid(name: str, expected: str, value: Any) -> ParameterError:
    """The one error format: ``parameter 'name': expected <expected>, got <value>``."""
    return ParameterError(f"parameter '{name}': expected {expected}, got {value!r}")


def declare_parameters(
    node, defaults: Mapping[str, Any], descriptions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Declare each parameter with its default; return the values converted to the defaults' types."""
    from rcl_interfaces.msg import ParameterDescriptor  # here: the rest of this module is ROS-free

    values = {}
    for name, default in defaults.items():
        descriptor = ParameterDescriptor(description=(descriptions or {}).get(name, ""), dynamic_typing=True)
        declared = None if isinstance(default, list) and not default else default
        value = node.declare_parameter(name, declared, descriptor).value
        values[name] = coerce(name, default if value is None else value, default)
    return values


def coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default``; :class:`ParameterError` when it cannot be."""
    if isinstance(default, list):
        kind = type(default[0]) if default else str
        if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
            raise invalid(name, f"a list, each item {_WORDS[kind]}", value)
        return [coerce(name, item, kind()) for item in value]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise invalid(name, _WORDS[bool], value)
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise invalid(name, f"an integer like {default}", value)
        return int(value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(name, f"a number like {default}", value)
        return float(value)
    if not isinstance(value, str):
        raise invalid(name, _WORDS[str], value)
    return value


def require(condition: bool, name: str, expected: str, value: Any) -> None:
    """Raise :func:`invalid` unless ``condition`` holds (for ranges and choices)."""
    if not condition:
        raise invalid(name, expected, value)


def accept_live_changes(
    node, defaults: Mapping[str, Any], apply: Callable[[dict[str, Any]], None], live: Collection[str]
) -> None:
    """Let ``ros2 param set`` change the parameters named in ``live`` while ``node`` runs.

    A new value is converted like at startup and handed to ``apply`` (which may raise
    :class:`ParameterError` to refuse it); the node's other parameters are refused with the reason that they
    are read at startup only. Call it after :func:`declare_parameters`.
    """
    from rcl_interfaces.msg import SetParametersResult

    def on_set(parameters) -> SetParametersResult:
        changes = {}
        try:
            for parameter in parameters:
                if parameter.name not in defaults:
                    continue  # rclpy's own (use_sim_time, ...)
                if parameter.name not in live:
                    raise ParameterError(
                        f"parameter '{parameter.name}' is read at startup only: restart the node to change "
                        f"it (these change live: {', '.join(sorted(live))})"
                    )
                changes[parameter.name] = coerce(parameter.name, parameter.value, defaults[parameter.name])
            if changes:
                apply(changes)
        except ParameterError as error:
            return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
