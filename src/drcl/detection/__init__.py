"""drcl.detection"""
