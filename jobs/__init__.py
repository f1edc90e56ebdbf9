"""reelsim.jobs"""
