"""Errors a user can cause. Command lines print their message as one line and exit non-zero."""


class UserError(Exception):
    """A mistake in what the user asked for (a bad flag, an unknown VM, an unreadable file)."""
