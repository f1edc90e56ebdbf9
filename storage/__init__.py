"""reelsim.storage"""
