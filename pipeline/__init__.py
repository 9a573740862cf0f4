"""Imaging pipeline, networks, scoring, training and evaluation.

Takes plain arguments (paths, arrays, small dataclasses), never reads global settings and never
imports Celery or pynetdicom. Built so far: ``preprocess`` (N4, normalisation, ADC, model inputs,
measurements), ``networks`` and ``gradcam``. Case preparation, training and scoring come next.
"""
