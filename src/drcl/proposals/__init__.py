"""drcl.proposals"""
