"""A PyTorch reference of the CIFAR protocol and the tools that compare our kit with it.

``python -m experiments.parity.NAME``; needs torch (the ``[parity]`` extra).
"""
