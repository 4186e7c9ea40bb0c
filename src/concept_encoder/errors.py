"""The errors a user can cause, each reported by the command line as one line and exit code 2.

They live here, apart from the code that raises them, so that the command line can catch them without importing
torch or transformers (`concept-encoder --help` answers in well under a second)."""


class ConfigError(ValueError):
    """A config file or override that cannot describe a run; the message names the file and the key."""


class CorpusError(ValueError):
    """A corpus source that cannot be read; the message names the source or file."""


class TaskError(ValueError):
    """A task that cannot be loaded; the message names the task, file, row or column."""


class TokenizerError(ValueError):
    """A tokenizer that cannot serve the run (no [MASK], an unknown kind)."""


class RegistryError(Exception):
    """Any registry failure, as one message that names the database file."""


class RunFolderError(ValueError):
    """A file of a run folder that exists but cannot be read (truncated, edited, not UTF-8)."""


USER_ERRORS = (ConfigError, CorpusError, TaskError, TokenizerError, RegistryError, RunFolderError,
               FileNotFoundError, PermissionError, FloatingPointError)
