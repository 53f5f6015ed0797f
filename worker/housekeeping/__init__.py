"""Housekeeping: the periodic sweep that finds stuck work of every job kind and sets it moving again."""
