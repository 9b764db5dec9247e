"""The box-domain pre-training stage (AlignDet) stacked on 2DRCL: its runner."""
