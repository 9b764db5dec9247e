"""drcl.engine"""
