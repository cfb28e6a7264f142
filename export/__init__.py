"""Freeze a trained singan-tf pyramid into SavedModel and ONNX (filled by the export issue)."""
