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


class TrackingStoreError(RuntimeError):
    """The MLflow tracking store cannot be opened or written (a corrupt ``mlflow.db``, a server
    that does not answer)."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """The first line of an error's message, cut to ``limit`` characters (libraries such as Keras
    append whole configs to theirs)."""
    return (str(err).strip().splitlines() or [""])[0][:limit]


def disk_full_message(err: OSError) -> str | None:
    """The user's message for a write that failed because the disk is full (ENOSPC), else None."""
    import errno

    if err.errno != errno.ENOSPC:
        return None
    where = f" writing {err.filename}" if err.filename else ""
    return (f"no space left on the device{where}: free some space and rerun; the outputs already saved are "
            "unchanged (every stage writes its files whole or not at all)")
