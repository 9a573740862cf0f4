"""The larc daemon: command line, settings, DICOM listener, index, assembly, pairing, worklist."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("larc")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"
