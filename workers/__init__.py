"""Celery application and tasks (thin wrappers over ``pipeline``). Not built yet: see README."""
