"""TensorFlow runtime settings shared by the families, applied once at the edge before TensorFlow
runs its first op (each family decides the numbers: :meth:`ebm.families.Family.configure`)."""

from __future__ import annotations


def on_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def set_threads(intra: int = 0, inter: int = 0) -> dict:
    """Set TF's intra-op and inter-op thread pools (0 = leave TF's default); returns the sizes in
    force. A process whose TF has already run keeps what it has."""
    import tensorflow as tf

    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TF already initialised (e.g. in a test process): keep what is set
        pass
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
