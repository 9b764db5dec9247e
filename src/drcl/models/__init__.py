"""drcl.models"""
