"""The one exception type a user ever sees: a mistake they can fix, said in one line."""


class CharrnnError(Exception):
    """A user-facing error: the message says what is wrong and what to do about it."""
