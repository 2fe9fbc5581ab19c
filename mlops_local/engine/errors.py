"""The errors the local engine raises; each message names the step, parameter or value at fault."""


class EngineError(ValueError):
    """A pipeline definition or run request the engine cannot carry out."""


class DefinitionError(EngineError):
    """The definition is wrong (a cycle, a missing reference, an unsupported step or function).

    Raised before any step runs.
    """


class ParameterError(EngineError):
    """A parameter override is unknown or has the wrong type."""


class StepFailure(EngineError):
    """A step failed while running; the message is the step's failure reason."""
