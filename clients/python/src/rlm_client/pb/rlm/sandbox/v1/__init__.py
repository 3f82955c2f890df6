"""Generated from proto/ by clients/python/generate.py. DO NOT EDIT."""
