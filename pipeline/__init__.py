"""Imaging pipeline, networks, scoring, training and evaluation.

Takes plain arguments (paths, arrays, small dataclasses and pydantic configs), never reads global
settings and never imports Celery or pynetdicom. Built so far: ``case`` (``prepare_case``: a
case's files to model inputs), ``config``, ``preprocess``, ``networks``, ``gradcam``,
``signatures`` and ``train`` (signature networks, out-of-fold), ``cohort`` (labelled cohorts).
Scoring models and evaluation come next.
"""
