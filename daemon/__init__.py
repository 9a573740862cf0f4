"""The larc daemon: what runs next to the PACS, one room per job.

``settings`` (one typed model), ``service`` (wires ``larc serve``), ``cases`` (states, kinds,
transitions, case decisions), ``loops`` (the stages' background loop), ``logs``; packages
``index`` (SQLite bookkeeping), ``intake`` (ingest, assembly, priors), ``scoring`` (work orders,
executors, dispatcher), ``export`` (destinations, exporter), ``web`` (worklist, API, health,
metrics), ``cli`` (the ``larc`` command), ``harness`` (Orthanc + Redis + larc on one machine).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("larc")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"
