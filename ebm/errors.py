"""The errors a user can cause (bad data, a bad model file, a diverging run), in one place that
imports nothing, so entry points can catch them without loading the code that raises them."""


class DataError(RuntimeError):
    """A data source could not be loaded, or a prepared file is missing or malformed."""


class ModelFileError(RuntimeError):
    """A model file is missing or cannot be loaded."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite or runaway energies; the last healthy checkpoint is kept."""


class SamplingDiverged(RuntimeError):
    """A sampling chain produced non-finite energies: the model file is broken."""
