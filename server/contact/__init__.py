"""The contact policy: whom to contact, when and on which channel.

Send time (`send_time`), channel choice (`channel`) and their population prior (`population`)
are pure functions of feature states; see each module.
"""
__all__ = ["channel", "population", "send_time"]
