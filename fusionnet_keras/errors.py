"""User-facing errors.

Every problem caused by the user's input (a bad file, a wrong shape, an invalid
setting) is raised as :class:`FusionNetError` with a one-line message that names
the problem. The command-line interface prints such errors as ``Error: ...`` and
exits with status 2 instead of showing a traceback.
"""


class FusionNetError(ValueError):
    """An error the user can fix: bad input, bad configuration, missing file.

    A ``ValueError``, so code that validates arguments the Python way keeps working.
    """


class OutputExistsError(FusionNetError):
    """An output already exists and ``overwrite`` was not requested."""
