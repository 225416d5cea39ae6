"""One exception type for bad user input: the CLI prints it as one line and exits non-zero."""


class UserError(Exception):
    """Bad input (a plan, a path, a name): the message names the problem and the fix."""
