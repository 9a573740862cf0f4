"""The harness: larc as a hospital runs it, on one machine, on free loopback ports.

``peers`` (real DICOM peers and Redis for tests, benchmarks and the harness: Orthanc, dcmtk's
storescp and storescu, redis-server), ``system`` (:class:`Harness`: Orthanc playing the PACS with
the configuration in ``orthanc/``, Redis, ``larc serve`` and ``larc worker`` processes). The
Orthanc configuration and Lua script ship inside the package (``deploy/orthanc`` links here), so
``larc harness`` works from an installed larc.
"""

from daemon.harness.peers import REDIS_SERVER, Redis
from daemon.harness.system import LARC, ORTHANC_CONFIG, Harness, HarnessSpec, read_index

__all__ = [
    "LARC",
    "ORTHANC_CONFIG",
    "REDIS_SERVER",
    "Harness",
    "HarnessSpec",
    "Redis",
    "read_index",
]
