"""(see package docstring; filled below)"""
