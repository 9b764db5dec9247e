"""drcl.transforms"""
