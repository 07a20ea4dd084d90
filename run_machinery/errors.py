"""The errors this project reports to its user.

Helpers raise a `UserError` (or one derived from it) with a one-line message; only the
`main()` of a command prints it, as `error: ...`, and exits with status 1. The article's
modules import no project module, so theirs are their own: `USER_ERRORS` names them all.
"""
from margin_heads import HeadSettingsError
from mnist_loader import DatasetError


class UserError(Exception):
    """Something the user can fix: a setting, a missing or broken file, a device."""


USER_ERRORS = (UserError, DatasetError, HeadSettingsError)
