"""Analysis of fine-tuned detectors (``drcl analyze``).

- :mod:`drcl.analysis.errors`: error breakdown per frequency group (correct / classification /
  location / background / other, + missed), the paper's pie charts.
- :mod:`drcl.analysis.weight_norms`: per-class classifier weight norms against training frequency.
- :mod:`drcl.analysis.attention`: Grad-CAM maps of the backbone / FPN.
- :mod:`drcl.analysis.cli`: the command-line front end.

Submodules are imported on use (torch and matplotlib are not loaded by ``import drcl.analysis``).
"""
