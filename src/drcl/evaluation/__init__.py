"""drcl.evaluation"""
