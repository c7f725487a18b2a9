"""Question templates for the sample families, one template per line."""
