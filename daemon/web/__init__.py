"""The web worklist: pages for radiologists and a JSON API for other systems, served by
``larc serve`` (FastAPI + uvicorn in a thread), with health and Prometheus metrics."""
