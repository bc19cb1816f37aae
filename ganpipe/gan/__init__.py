"""GAN training: the nets, the loss registry, DiffAugment, the training loop, checkpoints, DDP,
sampling and the labelled export.
"""
