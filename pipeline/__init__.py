"""Imaging pipeline, networks and scoring (the runtime), and training and evaluation
(:mod:`pipeline.training`, which the runtime never imports).

Takes plain arguments (paths, arrays, small dataclasses and pydantic configs), never reads global
settings and never imports Celery or pynetdicom. Runtime: ``kinds`` (case kinds, signature
names), ``case`` (``prepare_case``: a case's selected series to model inputs), ``config``,
``preprocess``, ``networks``, ``gradcam``, ``features`` / ``feature_names``, ``models`` (SVM,
Cox, cut-off, nomogram, subtypes), ``bundle`` (load a bundle, score prepared inputs),
``manifest`` (check a bundle without torch), ``stats``, ``timing``, ``errors``.
"""
