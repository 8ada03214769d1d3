"""rclib under lmms-eval: the paper's table for RC and its peers, with lmms-eval's datasets and metrics.

- ``rclib.eval.model``: the lmms-eval model ``rclib`` (entry point :func:`manifest`).
- ``rclib.eval.shapesworld``: ShapesWorld as the lmms-eval task group ``shapesworld``, generated locally.
- ``rclib.eval.benchmarks``: the paper's benchmarks, their lmms-eval tasks and headline metrics.
- ``rclib.eval.grid``: ``rclib eval``, one lmms-eval run per (method, budget) cell, resumable.
- ``rclib.eval.table``: ``rclib table``, the table from lmms-eval result folders, beside the reported numbers.
- ``rclib.eval.commands``: the two sub-commands' parsers.

Needs the ``eval`` extra (``pip install rclib[eval]``).
"""


def manifest():
    """lmms-eval's entry point (group ``lmms_eval.models``): the model ``rclib``, imported only when asked for."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="rclib", simple_class_path="rclib.eval.model.RclibModel")
