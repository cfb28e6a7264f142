"""Freeze a trained singan-tf pyramid into SavedModel (TF Serving layout) and ONNX.

    python -m export RUN_DIR --out DIR [--name NAME] [--version N] [--format savedmodel,onnx,onnx-int8]

writes ``DIR/savedmodel/NAME/N/`` (+ ``DIR/savedmodel/models.config``),
``DIR/NAME.onnx``, optionally ``DIR/NAME.int8.onnx``, and ``DIR/NAME.json``
(pyramid metadata for clients that draw the noise themselves).
Python API: ``to_saved_model``, ``to_onnx``, ``to_onnx_int8``, ``export_run``.
"""

__all__ = ["export_run", "graph_feeds", "metadata", "to_onnx", "to_onnx_int8", "to_saved_model"]


def __getattr__(name: str):
    # The API loads TensorFlow: only when it is used, so `python -m export` checks its
    # arguments first (and loads TensorFlow quietly).
    if name in __all__:
        from export import api

        return getattr(api, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
