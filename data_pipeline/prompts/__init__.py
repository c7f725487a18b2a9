"""Prompt templates (string.Template ``$name`` placeholders) for the VLM stages of the pipeline."""
