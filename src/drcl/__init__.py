"""drcl: long-tailed object detection pre-training with 2DRCL."""

__version__ = "0.1.0"
