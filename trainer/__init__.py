"""Train image classifiers on ImageNet WebDataset shards: `python -m trainer` or `torchrun ... -m trainer`."""
