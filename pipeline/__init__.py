"""reelsim.pipeline"""
