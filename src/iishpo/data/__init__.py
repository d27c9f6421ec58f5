"""Data sets: fetching, reading and preparing images at each resolution of a ladder."""
