"""Training and validation on a hospital's labelled cohort: what ``larc train`` and
``larc evaluate`` run, and the demo bundle.

Builds on the runtime modules of :mod:`pipeline` (the same ``prepare_case``, networks and models
scoring uses); nothing in the runtime imports this package, so a scoring worker never loads the
training code. ``cohort`` (a labelled folder of studies: scan, pairing, series selection,
parallel preparation), ``networks`` (fitting the signature networks: SGD, augmentation, early
stopping, k-fold), ``signatures`` (``larc train signatures``), ``bundle`` (``larc train models``),
``evaluate`` (``larc evaluate``: statistics and report), ``demo`` (the small synthetic bundle of
``larc demo`` and ``larc harness``).
"""
