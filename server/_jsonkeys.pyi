"""Duplicate keys in JSON text, found in one pass (``server/_jsonkeys.c``; the fast check of ``server.facts``)."""

def scan(data: str | bytes, /) -> bool | None:
    """Whether any object of the JSON text ``data`` holds the same key twice.

    True: no object does. False: one does (which one, and whether it matters, is for the
    caller's exact check to say). None: unsure (a key spelled with a backslash escape, nesting
    deeper than 256, an object with more than 256 keys, more than 4,096 keys in the open
    objects, text that is not valid JSON, or a str that cannot be UTF-8).
    """
