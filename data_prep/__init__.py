"""data_prep: image datasets (official ImageNet archives, Kaggle layout, any image folder) to
shuffled WebDataset shards with a timm-compatible `_info.json` manifest.

Run it as `python -m data_prep --help`; docs/data_prep.md explains layouts, resume and verify.
"""

__version__ = "1.1"   # 1.1: deep pixels scaled, stray folders skipped (plans of 1.0 differ)
