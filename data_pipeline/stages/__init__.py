"""The pipeline stages: recognise, ground, relate, qa, filter, export (one module each)."""
