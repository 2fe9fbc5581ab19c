"""The step graph: steps (including those nested in Condition branches), dependencies, checks.

Everything that can be wrong with a definition is found here, before any step runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlops_local.engine import conditions
from mlops_local.engine.errors import DefinitionError
from mlops_local.engine.expressions import FUNCTIONS, functions, parse_path, references
from mlops_local.engine.properties import check_property

STEP_TYPES = ("Processing", "Training", "Tuning", "RegisterModel", "Model", "Transform",
              "Condition", "Fail")
EXECUTION_VARIABLES = (
    "StartDateTime", "CurrentDateTime", "PipelineName", "PipelineArn",
    "PipelineExecutionId", "PipelineExecutionArn", "TrainingJobName", "ProcessingJobName",
)


@dataclass
class Node:
    name: str
    type: str
    step: dict
    branch: tuple[str, bool] | None = None  # (condition step, outcome that runs this step)
    needs: set[str] = field(default_factory=set)  # steps that must succeed first


@dataclass
class Graph:
    nodes: dict[str, Node]
    order: list[str]  # a topological order

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]


def _flatten(steps: list, branch, nodes: dict, problems: list) -> None:
    for step in steps:
        name = step.get("Name")
        if not name:
            problems.append(f"a step has no Name: {str(step)[:80]}")
            continue
        if name in nodes:
            problems.append(f"step name {name!r} is used twice")
            continue
        nodes[name] = Node(name, step.get("Type", ""), step, branch)
        if step.get("Type") == "Condition":
            arguments = step.get("Arguments", {})
            _flatten(arguments.get("IfSteps", []), (name, True), nodes, problems)
            _flatten(arguments.get("ElseSteps", []), (name, False), nodes, problems)


def _scanned(node: Node):
    """The parts of a step whose expressions this step evaluates itself."""
    if node.type == "Condition":
        return node.step.get("Arguments", {}).get("Conditions", [])
    return node.step.get("Arguments", {})


def _check_reference(path: str, node: Node, nodes: dict, parameters: set, problems: list):
    try:
        tokens = parse_path(path)
    except DefinitionError as err:
        problems.append(f"step {node.name}: {err}")
        return
    root = tokens[0]
    if root == "Parameters":
        if len(tokens) != 2 or tokens[1] not in parameters:
            problems.append(f"step {node.name} refers to undeclared parameter {path!r}")
    elif root == "Execution":
        if len(tokens) != 2 or tokens[1] not in EXECUTION_VARIABLES:
            problems.append(f"step {node.name} refers to unknown execution variable {path!r}")
    elif root == "Steps" and len(tokens) >= 2:
        target = nodes.get(tokens[1])
        if target is None:
            problems.append(f"step {node.name} refers to missing step {tokens[1]!r} ({path})")
            return
        node.needs.add(target.name)
        problem = check_property(target.step, tokens[2:])
        if problem:
            problems.append(f"step {node.name} refers to missing property {path!r}: {problem}")
    else:
        problems.append(f"step {node.name}: unsupported reference {path!r}")


def _check_node(node: Node, nodes: dict, parameters: set, problems: list) -> None:
    if node.type not in STEP_TYPES:
        problems.append(
            f"step {node.name} has unsupported type {node.type!r}; "
            f"the local engine runs {', '.join(STEP_TYPES)}"
        )
        return
    scanned = _scanned(node)
    for function in set(functions(scanned)) - set(FUNCTIONS):
        problems.append(f"step {node.name} uses unsupported function {function!r}")
    for path in references(scanned):
        _check_reference(path, node, nodes, parameters, problems)
    if node.type == "Condition":
        for condition in scanned:
            try:
                conditions.check(condition)
            except DefinitionError as err:
                problems.append(f"step {node.name}: {err}")
    for name in node.step.get("DependsOn", []) or []:
        if name not in nodes:
            problems.append(f"step {node.name} depends on missing step {name!r}")
        else:
            node.needs.add(name)
    if node.branch:
        node.needs.add(node.branch[0])


def _topological(nodes: dict) -> list[str]:
    order, placed = [], set()
    remaining = dict(nodes)
    while remaining:
        ready = [n for n, node in remaining.items() if node.needs <= placed]
        if not ready:
            raise DefinitionError(f"the steps form a cycle: {' -> '.join(_cycle(remaining))}")
        for name in ready:
            order.append(name)
            placed.add(name)
            del remaining[name]
    return order


def _cycle(remaining: dict) -> list[str]:
    """One cycle among steps none of which can start, as a path that returns to its start."""
    path, current = [], next(iter(remaining))
    while current not in path:
        path.append(current)
        current = next(n for n in sorted(remaining[current].needs) if n in remaining)
    return path[path.index(current):] + [current]


def build(definition: dict) -> Graph:
    """The checked step graph of a definition; DefinitionError lists every problem found."""
    if not isinstance(definition, dict) or not isinstance(definition.get("Steps"), list):
        raise DefinitionError("a pipeline definition is a JSON object with a 'Steps' list")
    parameters = {p.get("Name") for p in definition.get("Parameters", []) or []}
    nodes: dict[str, Node] = {}
    problems: list[str] = []
    _flatten(definition["Steps"], None, nodes, problems)
    for node in nodes.values():
        _check_node(node, nodes, parameters, problems)
    if problems:
        raise DefinitionError(
            "the pipeline definition cannot run:\n  " + "\n  ".join(dict.fromkeys(problems))
        )
    return Graph(nodes, _topological(nodes))
