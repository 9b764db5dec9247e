"""Pre-training stages: 2DRCL (the image-domain stage: its dataset with two views + boxes +
mask, and its runner) and the box-domain stage (``box``: AlignDet)."""
