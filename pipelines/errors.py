"""The one exception type for mistakes a user can make."""


class StudioError(Exception):
    """A problem the user caused and can fix: the message says what is wrong and how to fix it.

    The UI shows the message as it is (no traceback), the CLI prints it and exits with 2,
    and the API returns it as the error of the call.
    """
