"""drcl.report"""
