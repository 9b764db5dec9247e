"""drcl.export"""
