"""The one exception type handanno raises for bad input.

Every message names the file, camera or frame involved and says what to do; the CLI
prints it without a traceback.
"""


class HandannoError(Exception):
    """Bad input or a failed stage, with a message meant for the user."""
