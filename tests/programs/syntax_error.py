"""A program that does not compile."""

def broken(:
    pass
