"""Command-line entry for DVC stages: ``--params`` plus one ``--<name>`` per path field.

A stage script is two lines: ``main(pipeline.train, pipeline.TrainPaths)``. Paths are written
once, in ``dvc.yaml``'s ``cmd``; the defaults here only serve a hand run from the repo root.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
from pathlib import Path


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ start-up chatter, such as the CUDA probe on a CPU-only machine
    (called by entry points, never at import; Python errors still show in full)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def arm_interrupt() -> None:
    """Make SIGINT raise KeyboardInterrupt from here on, whatever the parent left.

    A background job of a non-interactive shell starts with SIGINT ignored (so does a DVC queue
    worker started from one, and every stage it runs), and Python then installs no handler.
    ``tracking.stage_run`` installs its own, but only once TensorFlow is imported and the MLflow
    run exists, 10-15 s into a stage on 2 cores: a ``dvc queue kill`` in that window was lost and
    the stage trained on. Entry points call this first, so start-up stops as in a terminal.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(stage_fn, paths_cls, argv=None) -> None:
    arm_interrupt()
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage_fn.__name__}", description=stage_fn.__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)")
    for field in dataclasses.fields(paths_cls):
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=Path, default=field.default,
                            help="(default: %(default)s)")
    args = vars(parser.parse_args(argv))
    quiet_tensorflow()
    from ebm.config import ConfigError, load_params
    from ebm.errors import (DataError, ModelFileError, SamplingDiverged, TrackingStoreError, TrainingDiverged,
                            disk_full_message)

    try:
        params = load_params(args.pop("params"))
        stage_fn(params, paths_cls(**args))
    except (ConfigError, DataError, ModelFileError, SamplingDiverged, TrainingDiverged, TrackingStoreError) as err:
        sys.exit(f"error: {err}")
    except OSError as err:
        if (message := disk_full_message(err)) is None:
            raise
        sys.exit(f"error: {message}")
