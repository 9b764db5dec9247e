"""drcl.data"""
