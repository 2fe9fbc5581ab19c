"""The local engine: runs a SageMaker pipeline definition JSON on this machine.

`run(definition, parameters)` checks the definition, resolves parameters and expressions,
runs each step's job as a local process under the SageMaker container contract, and
records the execution under `<state>/executions/`.
"""

from mlops_local.engine.errors import DefinitionError, EngineError, ParameterError, StepFailure
from mlops_local.engine.records import get_execution, list_executions, list_steps
from mlops_local.engine.runner import run

__all__ = [
    "DefinitionError", "EngineError", "ParameterError", "StepFailure",
    "get_execution", "list_executions", "list_steps", "run",
]
