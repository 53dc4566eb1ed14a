"""Thin DVC stage entry points: parse arguments, load one params section, call the library."""
