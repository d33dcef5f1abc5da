"""Errors a user of `vla.data` can cause; every message names the problem and the fix."""
from __future__ import annotations


class DataError(Exception):
    """Base class of every error raised by `vla.data`."""


class EpisodeError(DataError, ValueError):
    """An episode handed to the writer or converter is malformed (shapes, dtypes, roles)."""


class DatasetExistsError(DataError, FileExistsError):
    """The output dataset folder already exists."""


class DataDirError(DataError, FileNotFoundError):
    """The data_dir, or the dataset folder inside it, does not exist."""


class UnknownDatasetError(DataError, KeyError):
    """A dataset name that is neither in the registry nor a standardized-schema dataset."""

    def __str__(self) -> str:  # KeyError would repr() the message and double its quotes
        return str(self.args[0])


class RegistryError(DataError, ValueError):
    """A registry or mixture file entry is malformed or names unknown words."""


class SchemaMismatchError(DataError, ValueError):
    """A registry entry names keys that are not in the dataset's features."""


class ShardError(DataError, IOError):
    """A tfrecord shard cannot be parsed."""


class StatisticsError(DataError, ValueError):
    """Statistics are missing or do not match the data they are applied to."""


class ConvertError(DataError, ValueError):
    """A source demo set cannot be converted; the message names the first bad episode or file."""
