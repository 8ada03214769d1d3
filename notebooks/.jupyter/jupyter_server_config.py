"""Jupyter server settings for rclib's notebooks; `make lab` and the browser tests (tests/browser) start
JupyterLab with this folder on JUPYTER_CONFIG_PATH.

A notebook is saved as it is committed: no outputs, execution counts, widget state or kernel details in the
.ipynb (jupytext writes the paired .py from the same cells, see notebooks/jupytext.toml). Running and saving
the notebooks therefore leaves the working tree clean; outputs live in the open browser tab until it closes.
"""


def save_without_outputs(model, **kwargs):
    """Jupyter's pre-save hook: strip what running a notebook adds to it (``model`` is changed in place)."""
    if model.get("type") != "notebook":
        return
    notebook = model["content"]
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        cell.get("metadata", {}).pop("execution", None)
    for key in ("widgets", "language_info"):
        notebook["metadata"].pop(key, None)


c.ContentsManager.pre_save_hook = save_without_outputs  # noqa: F821 (c: the config Jupyter passes in)
