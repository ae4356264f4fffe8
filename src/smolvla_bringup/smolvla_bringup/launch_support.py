"""Builds a launch description from :mod:`smolvla_bringup.graph` (needs `launch` and `launch_ros`).

The launch files are one line each on top of this, so they start exactly the nodes, names, parameter
files and argument overrides that `smolvla-run` starts.
"""

from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from smolvla_bringup import graph


def _nodes(context, graph_name: str):
    files, specs = graph.graph(graph_name)
    namespace = graph.check_namespace(LaunchConfiguration("namespace").perform(context))
    extra = [p for p in LaunchConfiguration("params").perform(context).split(",") if p]
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in graph.arguments_for(specs)}
    per_node = graph.overrides(values, specs)
    fitted = graph.checkpoint_parameters(values, specs)  # under the user's files: theirs win
    return [
        Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[*map(str, files), fitted.get(spec.name, {}), *extra, per_node.get(spec.name, {})],
        )
        for spec in specs
    ]


def describe(graph_name: str) -> LaunchDescription:
    """The graph's launch arguments (only those that set a parameter of one of its nodes; all default to
    "keep the YAML value") and its nodes."""
    _, specs = graph.graph(graph_name)
    arguments = [
        DeclareLaunchArgument(argument.name, default_value="", description=argument.help)
        for argument in graph.arguments_for(specs)
    ]
    arguments.append(
        DeclareLaunchArgument("params", default_value="", description="extra YAML files, comma-separated")
    )
    arguments.append(
        DeclareLaunchArgument(
            "namespace", default_value="", description="run the graph in this namespace (e.g. left)"
        )
    )
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes, args=[graph_name])])
