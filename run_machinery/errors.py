"""The one kind of error this project reports to its user.

Helpers raise a `UserError` (or one derived from it) with a one-line message; only the
`main()` of a script prints it, as `error: ...`, and exits with status 1.
"""


class UserError(Exception):
    """Something the user can fix: a setting, a missing or broken file, a device."""
