"""The exception hierarchy.

Every error facecomp raises derives from :class:`FacecompError` and also from the builtin that best
describes it, so callers can catch either. Errors carry structured fields (``path``, ``hint``) and a
message that names the file and what to do. Only the CLI turns them into exit codes.
"""

from __future__ import annotations

import os


class FacecompError(Exception):
    """Base of all facecomp errors. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, hint: str | None = None):
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:  # one line, always naming the file when there is one
        text = self.message
        if self.path and self.path not in text:
            text = f"{self.path}: {text}"
        if self.hint:
            text = f"{text} ({self.hint})"
        return text


class SettingsError(FacecompError, ValueError):
    """A setting is out of range or contradicts another."""

    exit_code = 2


class DisclosureError(SettingsError):
    """An attempt to disable, hide or shrink the disclosure, or a label that cannot fit the frame."""

    exit_code = 3


class MediaError(FacecompError, OSError):
    """Base for problems with media files."""

    exit_code = 4


class InvalidMediaError(MediaError, ValueError):
    """The file cannot be decoded: corrupt, truncated, not media, or of an unsupported format."""

    exit_code = 4


class NoVideoStreamError(InvalidMediaError):
    """The file has no video stream (audio-only, subtitles, data)."""

    exit_code = 5


class EmptyMediaError(InvalidMediaError):
    """The video stream holds no decodable frame, or the chosen range selects none."""

    exit_code = 6


class OutputError(MediaError):
    """The output cannot be written: same as input, unwritable folder, disk full, encoder refused."""

    exit_code = 7


class MetadataError(FacecompError, RuntimeError):
    """A disclosure tag did not survive the write (read back and found missing or different)."""

    exit_code = 8


class ModelError(FacecompError, RuntimeError):
    """A model is missing, fails verification, or does not meet its contract."""

    exit_code = 9


class ModelMissingError(ModelError, FileNotFoundError):
    """The model is not in the cache; ``hint`` names the command that fetches it."""

    exit_code = 9


class ModelIntegrityError(ModelError, ValueError):
    """A model file's sha256 does not match the registry: refused."""

    exit_code = 10


class ModelDownloadError(ModelError, ConnectionError):
    """pip could not download the archive that holds a model (offline, index unreachable)."""

    exit_code = 9


class NoFaceError(FacecompError, LookupError):
    """No face was found where one is required (a source photo, a reference)."""

    exit_code = 11


class CancelledError(FacecompError):
    """The job was cancelled by its host or by the user."""

    exit_code = 130
