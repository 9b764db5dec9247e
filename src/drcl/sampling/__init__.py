"""drcl.sampling"""
