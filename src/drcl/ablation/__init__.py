"""The ablation grid: rows x seeds under one fine-tuning recipe, with paired confidence intervals.

``rows`` names the rows, ``protocol`` builds and checks their fine-tuning configs (the fair
protocol), ``results`` turns per-seed metrics into ``results.json`` and tables, ``runner`` runs it.
"""
