"""The generic backbone: a ResNet pre-trained supervised on a procedurally generated,
class-balanced classification set (the stand-in for ImageNet weights, which cannot be fetched).

``data`` generates the set (``drcl data make-generic``), ``train`` trains and exports the
backbone in torchvision's layout (``drcl pretrain-generic``); use it with ``model.weights=PATH``.
"""
