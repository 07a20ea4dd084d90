"""What the scripts' command lines share."""
import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States each flag's default, unless its help already says it in words."""

    def _get_help_string(self, action):
        return action.help if "default:" in action.help else super()._get_help_string(action)
