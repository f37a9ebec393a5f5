"""Every error the runtime raises on purpose.

    EdgeRuntimeError                 base: one line, safe to show a user as it is
    ├── BundleError                  the export on disk is unusable
    │   ├── NotOnnxError             the model file is not ONNX at all
    │   ├── UnsupportedModelError    ONNX that onnxruntime refuses (e.g. 2018 "ONNX10")
    │   ├── ChecksumError            ModelFileSHA1 does not match the model file
    │   ├── MetadataError            a metadata key holds a value we do not know
    │   ├── LabelsError              labels missing or not matching the outputs
    │   └── UnsafeArchiveError       a zip that would write outside its folder, or a bomb
    ├── ImageError                   an input image cannot be used
    │   ├── ImageDecodeError         not a decodable image (or truncated)
    │   │   └── ImageFormatError     not JPEG, PNG, BMP, GIF or WebP (by its first bytes)
    │   ├── ImageTooLargeError       too many pixels (decompression bombs)
    │   │   └── ImageShapeError      too long and thin, or would grow too large when resized
    │   └── ImageBusyError           the shared decode budget stayed full too long
    ├── ProviderError                an execution provider was asked for but is absent
    ├── InferenceError               onnxruntime failed while running a model
    ├── ConfigError                  a setting is wrong (the key is named)
    ├── MissingExtraError            an optional extra a command needs is not installed (it is named)
    ├── StoreError                   the event store cannot be used
    │   ├── DiskFullError            no room on its disk or in its budget
    │   └── LabelError               a label the store refuses (a box outside the image, no such sample)
    │       └── LabelConflictError   saved with a stale revision: someone else saved first
    ├── ExportError                  `events export` could not write its copy (a full disk, a name
    │                                leading outside OUT, a base dataset it cannot read)
    ├── ModelStoreError              the model store cannot do what was asked
    │   ├── PullError                a pulled update was refused: its description, download or hash
    │   ├── SignatureError           an update's signature is missing, damaged or does not match
    │   └── TrainingError            a retraining on the device failed: its child's error, deadline or budget
    └── ControlError                 a worker's control message it does not understand (workers/control.py)

Vendor exceptions (onnxruntime, OpenCV, zipfile) are mapped to these where they enter,
with `raise ... from exc`, so callers catch only this tree. Both commands (`edge-runtime`,
`edge-export`) print them, and OS errors, through run_command; the HTTP server maps
classes to status codes in one table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def run_command(prog: str, command: Callable[[], int]) -> int:
    """The command's exit status; an error raised on purpose, or an OS error (a full disk, a
    folder that is a file, a file another user owns), is one line on stderr and status 1."""
    try:
        return command()
    except EdgeRuntimeError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
    except PermissionError as exc:  # a bundle made by another user, read by the service's own user
        print(f"{prog}: {exc.filename or exc}: permission denied for the user running {prog}", file=sys.stderr)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{prog}: {where}{exc.strerror or exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def first_line(exc: BaseException, otherwise: str = "") -> str:
    """The first line of a vendor exception's message, for a one-line error; `otherwise`
    (or the exception's class name) when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else otherwise or type(exc).__name__


class EdgeRuntimeError(Exception):
    """Base class: the message is one line and meant for the user."""


class BundleError(EdgeRuntimeError):
    pass


class NotOnnxError(BundleError):
    pass


class UnsupportedModelError(BundleError):
    pass


class ChecksumError(BundleError):
    pass


class MetadataError(BundleError):
    pass


class LabelsError(BundleError):
    pass


class UnsafeArchiveError(BundleError):
    pass


class ImageError(EdgeRuntimeError):
    pass


class ImageDecodeError(ImageError):
    pass


class ImageFormatError(ImageDecodeError):
    pass


class ImageTooLargeError(ImageError):
    pass


class ImageShapeError(ImageTooLargeError):
    pass


class ImageBusyError(ImageError):
    """Temporary: try again once other images have been decoded."""


class ProviderError(EdgeRuntimeError):
    pass


class InferenceError(EdgeRuntimeError):
    pass


class ConfigError(EdgeRuntimeError):
    """A config file, environment variable or flag is wrong (the key is named)."""


class MissingExtraError(EdgeRuntimeError):
    """A command needs an optional extra that is not installed; the message names the pip command."""


class StoreError(EdgeRuntimeError):
    """The event store cannot be opened or used (the data folder is named)."""


class DiskFullError(StoreError):
    """The store's disk (or its budget) has no room; recording resumes when space returns."""


class LabelError(StoreError):
    """A label that cannot be saved as it is: the sample, a tag or a box is named."""


class LabelConflictError(LabelError):
    """A label saved over a revision that is no longer the current one; `current` is the
    label as it now stands (None: it was deleted)."""

    def __init__(self, message: str, current: object = None) -> None:
        super().__init__(message)
        self.current = current


class ExportError(EdgeRuntimeError):
    """The export could not be written (a full disk, a name leading outside OUT)."""


class ModelStoreError(EdgeRuntimeError):
    pass


class PullError(ModelStoreError):
    """A model update from a URL or the module twin was refused (the source is named, its
    secrets hidden); the active model is untouched."""


class SignatureError(ModelStoreError):
    """An update is refused: no signature, a damaged one, another key's, or files that differ."""


class TrainingError(ModelStoreError):
    """A candidate could not be trained or compared on the device (publish/retrain.py); the
    active version and the dataset are untouched."""
