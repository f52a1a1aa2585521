"""The infinite-width theory: the limit kernels (``limits``), their spectra on
the sphere (``spectrum``) and the studies that read them (docs/theory.md §6):
one class per study in ``studies``, the same studies as functions in ``depth_study``."""
