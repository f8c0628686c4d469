"""Decoding images of any format and size, and the resize policies (crop, full)."""
