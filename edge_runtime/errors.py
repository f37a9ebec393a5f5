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
    └── StoreError                   the event store cannot be used
        └── DiskFullError            no room on its disk or in its budget

Vendor exceptions (onnxruntime, OpenCV, zipfile) are mapped to these where they enter,
with `raise ... from exc`, so callers catch only this tree. The CLI prints `str(error)`;
the HTTP server maps classes to status codes in one table.
"""

from __future__ import annotations


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


class StoreError(EdgeRuntimeError):
    """The event store cannot be opened or used (the data folder is named)."""


class DiskFullError(StoreError):
    """The store's disk (or its budget) has no room; recording resumes when space returns."""
