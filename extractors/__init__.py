"""reelsim.extractors"""
