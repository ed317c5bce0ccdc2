"""Pure rules: eligibility for automatic passback, and the percent and Canvas-score math.

Nothing here does I/O or reads the clock; everything is passed in.
"""
