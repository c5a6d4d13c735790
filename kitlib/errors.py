"""The one exception type for mistakes a user can fix (bad files, bad options)."""


class KitError(Exception):
    """A problem with the user's input: the message names the file or row and the fix.

    The CLI prints it as one line and exits with status 2; notebooks show it as is.
    """
