"""The one exception type users see as a single readable line."""


class StainvirtError(Exception):
    """A problem the user can fix: the message names the thing and what to do.

    The command line prints it as one line (``error: ...``) and exits non-zero,
    without a traceback.
    """
