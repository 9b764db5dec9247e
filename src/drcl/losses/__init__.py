"""drcl.losses"""
