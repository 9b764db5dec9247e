"""drcl.analysis"""
