"""Imaging pipeline, networks, scoring, training and evaluation.

Takes plain arguments (paths, arrays, small dataclasses), never reads global settings and never
imports Celery or pynetdicom. Nothing is built here yet: the imaging issue fills it.
"""
