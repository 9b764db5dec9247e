"""2DRCL pre-training: its dataset (two views + boxes + mask) and its runner."""
