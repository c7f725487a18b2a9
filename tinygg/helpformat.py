"""The ``--help`` layout of every ``tinygg`` command: descriptions and epilogs as written, and an option's
default shown where it says something (not for flags, nor for options whose absence means "not set")."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default is None or default is argparse.SUPPRESS or isinstance(default, bool):
            return text
        if default in ("", [], ()):  # an empty string or list: nothing to show
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text
